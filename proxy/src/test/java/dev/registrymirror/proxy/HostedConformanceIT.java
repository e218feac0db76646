package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.io.TempDir;

/**
 * The distribution spec's push, content-discovery and content-management workflows (the cases of
 * its conformance suite, one test each) against the mirror's jar with a hosted namespace, {@code
 * team/**}; CNCF Distribution 2.8 is the default upstream and holds a {@code team/app} of its own,
 * which the mirror must never serve or ask for.
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class HostedConformanceIT {
    private static final String OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
    private static final String OCI_INDEX = "application/vnd.oci.image.index.v1+json";
    private static final String OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
    private static final String SBOM = "application/vnd.example.sbom.v1+json";
    private static final String REPO = "team/app";

    @TempDir
    static Path work;
    static RealParts.Child registry;
    static RealParts.Child mirror;
    static String mirrorUrl;
    static String registryUrl;
    static final HttpClient http = HttpClient.newHttpClient();
    static final byte[] config = "{\"architecture\":\"amd64\",\"os\":\"linux\"}".getBytes(StandardCharsets.UTF_8);
    static final byte[] layer = random(300_000, 1);
    static final byte[] chunkA = random(70_000, 2);
    static final byte[] chunkB = random(50_000, 3);
    static Digest imageDigest;
    static String imageJson;

    @BeforeAll
    static void start() throws Exception {
        int registryPort = RealParts.freePort();
        registryUrl = "http://127.0.0.1:" + registryPort;
        registry = RealParts.registry(work.resolve("registry"), registryPort, null);
        RealParts.awaitUp(registryUrl + "/v2/", registry);
        RegistryApi upstream = new RegistryApi(registryUrl);
        upstream.manifest(REPO, "upstream-only", OCI_MANIFEST, upstream.image(REPO, OCI_CONFIG, random(1000, 9)));

        Path cfg = Files.writeString(work.resolve("mirror.yaml"), """
                storage: {minFree: 0}
                hosted:
                  repositories: ["team/**"]
                  delete: true
                access:
                  rules:
                    - repositories: ["team/**"]
                      pull: [anonymous]
                      push: [anonymous]
                    - repositories: ["**"]
                      pull: [anonymous]
                """);
        int mirrorPort = RealParts.freePort();
        mirrorUrl = "http://127.0.0.1:" + mirrorPort;
        mirror = RealParts.mirror(work.resolve("mirror"), mirrorPort, "--config", cfg.toString(), "--storage",
                work.resolve("mirror/data").toString(), "--upstream", registryUrl);
        RealParts.awaitUp(mirrorUrl + "/v2/", mirror);
    }

    @AfterAll
    static void stop() {
        if (mirror != null) {
            mirror.close();
        }
        if (registry != null) {
            registry.close();
        }
    }

    static byte[] random(int n, long seed) {
        byte[] b = new byte[n];
        new Random(seed).nextBytes(b);
        return b;
    }

    static HttpResponse<byte[]> send(String method, String path, byte[] body, String... headers) throws Exception {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(path.startsWith("http") ? path : mirrorUrl + path))
                .method(method, body == null ? HttpRequest.BodyPublishers.noBody() : HttpRequest.BodyPublishers.ofByteArray(body));
        for (int i = 0; i < headers.length; i += 2) {
            b.header(headers[i], headers[i + 1]);
        }
        return http.send(b.build(), HttpResponse.BodyHandlers.ofByteArray());
    }

    static String header(HttpResponse<?> r, String name) {
        return r.headers().firstValue(name).orElse(null);
    }

    static String code(HttpResponse<byte[]> r) {
        return new JsonObject(new String(r.body(), StandardCharsets.UTF_8)).getJsonArray("errors").getJsonObject(0)
                .getString("code");
    }

    static Digest sha(byte[] b) {
        return Digest.of("sha256", b);
    }

    static String location(HttpResponse<?> r) {
        String l = header(r, "Location");
        assertThat(l).as("Location").isNotNull();
        return l;
    }

    static String withDigest(String location, Digest d) {
        return location + (location.contains("?") ? "&" : "?") + "digest=" + d;
    }

    static String manifest(Digest config, int configSize, List<byte[]> layers, String subject) {
        StringBuilder s = new StringBuilder("{\"schemaVersion\":2,\"mediaType\":\"" + OCI_MANIFEST + "\",\"config\":{"
                + "\"mediaType\":\"" + OCI_CONFIG + "\",\"digest\":\"" + config + "\",\"size\":" + configSize + "},\"layers\":[");
        for (int i = 0; i < layers.size(); i++) {
            s.append(i == 0 ? "" : ",").append("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"")
                    .append(sha(layers.get(i))).append("\",\"size\":").append(layers.get(i).length).append("}");
        }
        s.append("]");
        if (subject != null) {
            s.append(",").append(subject);
        }
        return s.append("}").toString();
    }

    // ---------------------------------------------------------------- push

    @Test
    @Order(1)
    void getOfANonexistentBlobIs404() throws Exception {
        HttpResponse<byte[]> r = send("GET", "/v2/" + REPO + "/blobs/" + sha(layer), null);
        assertThat(r.statusCode()).isEqualTo(404);
        assertThat(code(r)).isEqualTo("BLOB_UNKNOWN");
    }

    @Test
    @Order(2)
    void monolithicPostWithDigestYields201AndTheBlob() throws Exception {
        HttpResponse<byte[]> r = send("POST", "/v2/" + REPO + "/blobs/uploads/?digest=" + sha(config), config,
                "Content-Type", "application/octet-stream");
        assertThat(r.statusCode()).isEqualTo(201);
        assertThat(location(r)).isEqualTo("/v2/" + REPO + "/blobs/" + sha(config));
        assertThat(header(r, "Docker-Content-Digest")).isEqualTo(sha(config).toString());
        HttpResponse<byte[]> get = send("GET", location(r), null);
        assertThat(get.statusCode()).isEqualTo(200);
        assertThat(get.body()).isEqualTo(config);
    }

    @Test
    @Order(3)
    void postThenPutWithTheBlobYields201() throws Exception {
        HttpResponse<byte[]> open = send("POST", "/v2/" + REPO + "/blobs/uploads/", null);
        assertThat(open.statusCode()).isEqualTo(202);
        assertThat(header(open, "Docker-Upload-UUID")).isNotBlank();
        HttpResponse<byte[]> put = send("PUT", withDigest(location(open), sha(layer)), layer,
                "Content-Type", "application/octet-stream");
        assertThat(put.statusCode()).isEqualTo(201);
        HttpResponse<byte[]> head = send("HEAD", "/v2/" + REPO + "/blobs/" + sha(layer), null);
        assertThat(head.statusCode()).isEqualTo(200);
        assertThat(header(head, "Content-Length")).isEqualTo(Integer.toString(layer.length));
        assertThat(header(head, "Docker-Content-Digest")).isEqualTo(sha(layer).toString());
        HttpResponse<byte[]> range = send("GET", "/v2/" + REPO + "/blobs/" + sha(layer), null, "Range", "bytes=10-19");
        assertThat(range.statusCode()).isEqualTo(206);
        assertThat(range.body()).isEqualTo(Arrays.copyOfRange(layer, 10, 20));
    }

    @Test
    @Order(4)
    void chunksInOrderAreAccepted_outOfOrderGets416_andTheStatusTellsTheRange() throws Exception {
        HttpResponse<byte[]> open = send("POST", "/v2/" + REPO + "/blobs/uploads/", null);
        assertThat(open.statusCode()).isEqualTo(202);
        String session = location(open);
        HttpResponse<byte[]> early = send("PATCH", session, chunkB, "Content-Type", "application/octet-stream",
                "Content-Range", chunkA.length + "-" + (chunkA.length + chunkB.length - 1));
        assertThat(early.statusCode()).isEqualTo(416);
        assertThat(header(early, "Location")).isEqualTo(session); // where to go on, and from where
        assertThat(header(early, "Range")).isEqualTo("0-0");

        HttpResponse<byte[]> first = send("PATCH", session, chunkA, "Content-Type", "application/octet-stream",
                "Content-Range", "0-" + (chunkA.length - 1));
        assertThat(first.statusCode()).isEqualTo(202);
        assertThat(header(first, "Range")).isEqualTo("0-" + (chunkA.length - 1));
        HttpResponse<byte[]> status = send("GET", location(first), null);
        assertThat(status.statusCode()).isEqualTo(204);
        assertThat(header(status, "Range")).isEqualTo("0-" + (chunkA.length - 1));

        HttpResponse<byte[]> second = send("PATCH", location(first), chunkB, "Content-Type", "application/octet-stream",
                "Content-Range", chunkA.length + "-" + (chunkA.length + chunkB.length - 1));
        assertThat(second.statusCode()).isEqualTo(202);
        assertThat(header(second, "Range")).isEqualTo("0-" + (chunkA.length + chunkB.length - 1));
        byte[] whole = new byte[chunkA.length + chunkB.length];
        System.arraycopy(chunkA, 0, whole, 0, chunkA.length);
        System.arraycopy(chunkB, 0, whole, chunkA.length, chunkB.length);
        HttpResponse<byte[]> close = send("PUT", withDigest(location(second), sha(whole)), null);
        assertThat(close.statusCode()).isEqualTo(201);
        assertThat(send("GET", "/v2/" + REPO + "/blobs/" + sha(whole), null).body()).isEqualTo(whole);
    }

    @Test
    @Order(5)
    void aClosingPutMayCarryTheLastChunk_whereTheUploadIs() throws Exception {
        byte[] first = random(30_000, 41);
        byte[] last = random(20_000, 42);
        byte[] whole = new byte[first.length + last.length];
        System.arraycopy(first, 0, whole, 0, first.length);
        System.arraycopy(last, 0, whole, first.length, last.length);
        String session = location(send("POST", "/v2/" + REPO + "/blobs/uploads/", null));
        HttpResponse<byte[]> patch = send("PATCH", session, first, "Content-Type", "application/octet-stream",
                "Content-Range", "0-" + (first.length - 1));
        assertThat(patch.statusCode()).isEqualTo(202);
        HttpResponse<byte[]> wrong = send("PUT", withDigest(location(patch), sha(whole)), last,
                "Content-Type", "application/octet-stream", "Content-Range", "10-" + (10 + last.length - 1));
        assertThat(wrong.statusCode()).isEqualTo(416);
        HttpResponse<byte[]> put = send("PUT", withDigest(location(patch), sha(whole)), last,
                "Content-Type", "application/octet-stream", "Content-Range", first.length + "-" + (whole.length - 1));
        assertThat(put.statusCode()).isEqualTo(201);
        assertThat(location(put)).isEqualTo("/v2/" + REPO + "/blobs/" + sha(whole));
        assertThat(send("GET", "/v2/" + REPO + "/blobs/" + sha(whole), null).body()).isEqualTo(whole);
    }

    @Test
    @Order(14)
    void aReferrerMayComeBeforeItsSubject_andAnIndexMayBeOne() throws Exception {
        Digest future = sha("a manifest not pushed yet".getBytes(StandardCharsets.UTF_8));
        byte[] emptyConfig = "{}".getBytes(StandardCharsets.UTF_8);
        send("POST", "/v2/" + REPO + "/blobs/uploads/?digest=" + sha(emptyConfig), emptyConfig);
        String referrer = "{\"schemaVersion\":2,\"mediaType\":\"" + OCI_MANIFEST + "\",\"config\":{\"mediaType\":"
                + "\"application/vnd.example.signature.v1+json\",\"digest\":\"" + sha(emptyConfig) + "\",\"size\":2},"
                + "\"layers\":[],\"subject\":{\"mediaType\":\"" + OCI_MANIFEST + "\",\"digest\":\"" + future
                + "\",\"size\":100}}";
        Digest r = sha(referrer.getBytes(StandardCharsets.UTF_8));
        HttpResponse<byte[]> put = send("PUT", "/v2/" + REPO + "/manifests/" + r, referrer.getBytes(StandardCharsets.UTF_8),
                "Content-Type", OCI_MANIFEST);
        assertThat(put.statusCode()).isEqualTo(201);
        assertThat(header(put, "OCI-Subject")).isEqualTo(future.toString());
        String index = "{\"schemaVersion\":2,\"mediaType\":\"" + OCI_INDEX + "\",\"artifactType\":\"" + SBOM + "\","
                + "\"manifests\":[{\"mediaType\":\"" + OCI_MANIFEST + "\",\"digest\":\"" + r + "\",\"size\":"
                + referrer.length() + "}],\"subject\":{\"mediaType\":\"" + OCI_MANIFEST + "\",\"digest\":\"" + future
                + "\",\"size\":100}}";
        Digest i = sha(index.getBytes(StandardCharsets.UTF_8));
        assertThat(send("PUT", "/v2/" + REPO + "/manifests/" + i, index.getBytes(StandardCharsets.UTF_8),
                "Content-Type", OCI_INDEX).statusCode()).isEqualTo(201);
        JsonArray manifests = new JsonObject(new String(send("GET", "/v2/" + REPO + "/referrers/" + future, null).body(),
                StandardCharsets.UTF_8)).getJsonArray("manifests");
        assertThat(manifests).hasSize(2);
        // The config's media type names the artifact when the manifest has no artifactType.
        assertThat(manifests.stream().map(o -> ((JsonObject) o).getString("artifactType")))
                .containsExactlyInAnyOrder("application/vnd.example.signature.v1+json", SBOM);
    }

    @Test
    @Order(5)
    void aStreamedPatchWithoutContentRangeIsAccepted() throws Exception {
        byte[] blob = random(40_000, 5);
        String session = location(send("POST", "/v2/" + REPO + "/blobs/uploads/", null));
        HttpResponse<byte[]> patch = send("PATCH", session, blob, "Content-Type", "application/octet-stream");
        assertThat(patch.statusCode()).isEqualTo(202);
        assertThat(send("PUT", withDigest(location(patch), sha(blob)), null).statusCode()).isEqualTo(201);
    }

    @Test
    @Order(6)
    void bytesThatDoNotMatchTheDigestAreRefusedAndTheSessionEnds() throws Exception {
        String session = location(send("POST", "/v2/" + REPO + "/blobs/uploads/", null));
        byte[] bytes = random(1000, 6);
        HttpResponse<byte[]> put = send("PUT", withDigest(session, sha("other".getBytes())), bytes);
        assertThat(put.statusCode()).isEqualTo(400);
        assertThat(code(put)).isEqualTo("DIGEST_INVALID");
        assertThat(send("GET", session, null).statusCode()).isEqualTo(404);
        assertThat(send("GET", "/v2/" + REPO + "/blobs/" + sha(bytes), null).statusCode()).isEqualTo(404);
    }

    @Test
    @Order(7)
    void aCancelledUploadIsGone() throws Exception {
        String session = location(send("POST", "/v2/" + REPO + "/blobs/uploads/", null));
        assertThat(send("PATCH", session, random(100, 7)).statusCode()).isEqualTo(202);
        assertThat(send("DELETE", session, null).statusCode()).isEqualTo(204);
        HttpResponse<byte[]> after = send("GET", session, null);
        assertThat(after.statusCode()).isEqualTo(404);
        assertThat(code(after)).isEqualTo("BLOB_UPLOAD_UNKNOWN");
    }

    @Test
    @Order(8)
    void crossRepositoryMounts() throws Exception {
        HttpResponse<byte[]> mounted = send("POST", "/v2/team/other/blobs/uploads/?mount=" + sha(layer) + "&from=" + REPO, null);
        assertThat(mounted.statusCode()).isEqualTo(201);
        assertThat(location(mounted)).isEqualTo("/v2/team/other/blobs/" + sha(layer));
        assertThat(send("GET", "/v2/team/other/blobs/" + sha(layer), null).body()).isEqualTo(layer);
        // Without from, or from a repository that lacks it: a session to upload to, as the spec says.
        HttpResponse<byte[]> noFrom = send("POST", "/v2/team/third/blobs/uploads/?mount=" + sha(layer), null);
        assertThat(noFrom.statusCode()).isEqualTo(202);
        assertThat(location(noFrom)).startsWith("/v2/team/third/blobs/uploads/");
        HttpResponse<byte[]> missing = send("POST", "/v2/team/third/blobs/uploads/?mount="
                + sha("nowhere".getBytes()) + "&from=" + REPO, null);
        assertThat(missing.statusCode()).isEqualTo(202);
        // A cached (upstream) repository is no source: its blobs are the upstream's to give.
        HttpResponse<byte[]> fromCache = send("POST", "/v2/team/third/blobs/uploads/?mount=" + sha(layer)
                + "&from=library/alpine", null);
        assertThat(fromCache.statusCode()).isEqualTo(202);
        assertThat(send("GET", "/v2/team/third/blobs/" + sha(layer), null).statusCode()).isEqualTo(404);
    }

    @Test
    @Order(9)
    void aManifestIsAcceptedByTag_andItsBlobsMustBeThere() throws Exception {
        assertThat(send("GET", "/v2/" + REPO + "/manifests/1.0", null).statusCode()).isEqualTo(404);
        byte[] missing = random(10, 8);
        String broken = manifest(sha(config), config.length, List.of(layer, missing), null);
        HttpResponse<byte[]> refused = send("PUT", "/v2/" + REPO + "/manifests/broken", broken.getBytes(StandardCharsets.UTF_8),
                "Content-Type", OCI_MANIFEST);
        assertThat(refused.statusCode()).isEqualTo(400);
        assertThat(code(refused)).isEqualTo("MANIFEST_BLOB_UNKNOWN");
        assertThat(send("GET", "/v2/" + REPO + "/manifests/broken", null).statusCode()).isEqualTo(404);

        imageJson = manifest(sha(config), config.length, List.of(layer), null);
        HttpResponse<byte[]> put = send("PUT", "/v2/" + REPO + "/manifests/1.0", imageJson.getBytes(StandardCharsets.UTF_8),
                "Content-Type", OCI_MANIFEST);
        assertThat(put.statusCode()).isEqualTo(201);
        imageDigest = sha(imageJson.getBytes(StandardCharsets.UTF_8));
        assertThat(location(put)).isEqualTo("/v2/" + REPO + "/manifests/" + imageDigest);
        assertThat(header(put, "Docker-Content-Digest")).isEqualTo(imageDigest.toString());
    }

    @Test
    @Order(10)
    void aManifestWithNoLayersIsAccepted_andByDigestItMustHashToIt() throws Exception {
        String empty = manifest(sha(config), config.length, List.of(), null);
        Digest d = sha(empty.getBytes(StandardCharsets.UTF_8));
        HttpResponse<byte[]> wrong = send("PUT", "/v2/" + REPO + "/manifests/" + sha(config), empty.getBytes(StandardCharsets.UTF_8),
                "Content-Type", OCI_MANIFEST);
        assertThat(wrong.statusCode()).isEqualTo(400);
        assertThat(code(wrong)).isEqualTo("DIGEST_INVALID");
        HttpResponse<byte[]> put = send("PUT", "/v2/" + REPO + "/manifests/" + d, empty.getBytes(StandardCharsets.UTF_8),
                "Content-Type", OCI_MANIFEST);
        assertThat(put.statusCode()).isEqualTo(201);
    }

    @Test
    @Order(11)
    void manifestsAreServedAsPushed_byTagAndByDigest() throws Exception {
        for (String ref : List.of("1.0", imageDigest.toString())) {
            HttpResponse<byte[]> get = send("GET", "/v2/" + REPO + "/manifests/" + ref, null, "Accept", OCI_MANIFEST);
            assertThat(get.statusCode()).as(ref).isEqualTo(200);
            assertThat(new String(get.body(), StandardCharsets.UTF_8)).isEqualTo(imageJson);
            assertThat(header(get, "Content-Type")).isEqualTo(OCI_MANIFEST);
            assertThat(header(get, "Docker-Content-Digest")).isEqualTo(imageDigest.toString());
            HttpResponse<byte[]> head = send("HEAD", "/v2/" + REPO + "/manifests/" + ref, null);
            assertThat(head.statusCode()).isEqualTo(200);
            assertThat(header(head, "Content-Length")).isEqualTo(Integer.toString(imageJson.length()));
        }
    }

    @Test
    @Order(12)
    void anIndexMayNameManifestsOfItsRepositoryOnly() throws Exception {
        String index = "{\"schemaVersion\":2,\"mediaType\":\"" + OCI_INDEX + "\",\"manifests\":[{\"mediaType\":\""
                + OCI_MANIFEST + "\",\"digest\":\"" + imageDigest + "\",\"size\":" + imageJson.length()
                + ",\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}}]}";
        HttpResponse<byte[]> elsewhere = send("PUT", "/v2/team/other/manifests/multi", index.getBytes(StandardCharsets.UTF_8),
                "Content-Type", OCI_INDEX);
        assertThat(elsewhere.statusCode()).isEqualTo(400);
        assertThat(code(elsewhere)).isEqualTo("MANIFEST_INVALID");
        HttpResponse<byte[]> put = send("PUT", "/v2/" + REPO + "/manifests/multi", index.getBytes(StandardCharsets.UTF_8),
                "Content-Type", OCI_INDEX);
        assertThat(put.statusCode()).isEqualTo(201);
        assertThat(header(send("GET", "/v2/" + REPO + "/manifests/multi", null), "Content-Type")).isEqualTo(OCI_INDEX);
    }

    @Test
    @Order(13)
    void badManifestsAreRefusedWithManifestInvalid() throws Exception {
        String[][] bad = {
                {"not json", OCI_MANIFEST},
                {"{\"schemaVersion\":1,\"mediaType\":\"" + OCI_MANIFEST + "\"}", OCI_MANIFEST},
                {imageJson, OCI_INDEX},                                           // Content-Type not the mediaType
                {"{\"schemaVersion\":2,\"mediaType\":\"text/plain\"}", "text/plain"},
                {"{\"schemaVersion\":2,\"mediaType\":\"" + OCI_MANIFEST + "\",\"layers\":[]}", OCI_MANIFEST}, // no config
        };
        for (String[] b : bad) {
            HttpResponse<byte[]> r = send("PUT", "/v2/" + REPO + "/manifests/bad", b[0].getBytes(StandardCharsets.UTF_8),
                    "Content-Type", b[1]);
            assertThat(r.statusCode()).as(b[0]).isEqualTo(400);
            assertThat(code(r)).as(b[0]).isEqualTo("MANIFEST_INVALID");
        }
        byte[] huge = new byte[5 << 20];
        Arrays.fill(huge, (byte) ' ');
        HttpResponse<byte[]> big = send("PUT", "/v2/" + REPO + "/manifests/big", huge, "Content-Type", OCI_MANIFEST);
        assertThat(big.statusCode()).isEqualTo(413);
    }

    // ---------------------------------------------------------------- content discovery

    @Test
    @Order(20)
    void tagsAreListedInOrder_andPaged() throws Exception {
        for (String t : List.of("b", "a", "c")) {
            assertThat(send("PUT", "/v2/" + REPO + "/manifests/" + t, imageJson.getBytes(StandardCharsets.UTF_8),
                    "Content-Type", OCI_MANIFEST).statusCode()).isEqualTo(201);
        }
        HttpResponse<byte[]> all = send("GET", "/v2/" + REPO + "/tags/list", null);
        assertThat(all.statusCode()).isEqualTo(200);
        JsonObject body = new JsonObject(new String(all.body(), StandardCharsets.UTF_8));
        assertThat(body.getString("name")).isEqualTo(REPO);
        assertThat(body.getJsonArray("tags").getList()).containsExactly("1.0", "a", "b", "c", "multi");
        HttpResponse<byte[]> page = send("GET", "/v2/" + REPO + "/tags/list?n=2", null);
        assertThat(new JsonObject(new String(page.body(), StandardCharsets.UTF_8)).getJsonArray("tags").getList())
                .containsExactly("1.0", "a");
        assertThat(header(page, "Link")).isEqualTo("</v2/" + REPO + "/tags/list?n=2&last=a>; rel=\"next\"");
        HttpResponse<byte[]> next = send("GET", "/v2/" + REPO + "/tags/list?n=2&last=a", null);
        assertThat(new JsonObject(new String(next.body(), StandardCharsets.UTF_8)).getJsonArray("tags").getList())
                .containsExactly("b", "c");
        HttpResponse<byte[]> none = send("GET", "/v2/" + REPO + "/tags/list?n=0", null);
        assertThat(new JsonObject(new String(none.body(), StandardCharsets.UTF_8)).getJsonArray("tags").getList()).isEmpty();
        HttpResponse<byte[]> unknown = send("GET", "/v2/team/nothing/tags/list", null);
        assertThat(unknown.statusCode()).isEqualTo(404);
        assertThat(code(unknown)).isEqualTo("NAME_UNKNOWN");
    }

    @Test
    @Order(21)
    void referrersListWhatNamesTheSubject_filteredByArtifactType() throws Exception {
        String subject = "\"subject\":{\"mediaType\":\"" + OCI_MANIFEST + "\",\"digest\":\"" + imageDigest + "\",\"size\":"
                + imageJson.length() + "}";
        byte[] emptyConfig = "{}".getBytes(StandardCharsets.UTF_8);
        send("POST", "/v2/" + REPO + "/blobs/uploads/?digest=" + sha(emptyConfig), emptyConfig);
        byte[] sbom = random(500, 21);
        send("POST", "/v2/" + REPO + "/blobs/uploads/?digest=" + sha(sbom), sbom);
        String artifact = "{\"schemaVersion\":2,\"mediaType\":\"" + OCI_MANIFEST + "\",\"artifactType\":\"" + SBOM + "\","
                + "\"config\":{\"mediaType\":\"application/vnd.oci.empty.v1+json\",\"digest\":\"" + sha(emptyConfig)
                + "\",\"size\":2},\"layers\":[{\"mediaType\":\"application/json\",\"digest\":\"" + sha(sbom) + "\",\"size\":"
                + sbom.length + "}]," + subject + ",\"annotations\":{\"org.example.kind\":\"sbom\"}}";
        Digest artifactDigest = sha(artifact.getBytes(StandardCharsets.UTF_8));
        HttpResponse<byte[]> put = send("PUT", "/v2/" + REPO + "/manifests/" + artifactDigest,
                artifact.getBytes(StandardCharsets.UTF_8), "Content-Type", OCI_MANIFEST);
        assertThat(put.statusCode()).isEqualTo(201);
        assertThat(header(put, "OCI-Subject")).isEqualTo(imageDigest.toString());

        HttpResponse<byte[]> list = send("GET", "/v2/" + REPO + "/referrers/" + imageDigest, null);
        assertThat(list.statusCode()).isEqualTo(200);
        assertThat(header(list, "Content-Type")).isEqualTo(OCI_INDEX);
        JsonArray manifests = new JsonObject(new String(list.body(), StandardCharsets.UTF_8)).getJsonArray("manifests");
        assertThat(manifests).hasSize(1);
        JsonObject d = manifests.getJsonObject(0);
        assertThat(d.getString("digest")).isEqualTo(artifactDigest.toString());
        assertThat(d.getString("artifactType")).isEqualTo(SBOM);
        assertThat(d.getLong("size")).isEqualTo(artifact.length());
        assertThat(d.getJsonObject("annotations").getString("org.example.kind")).isEqualTo("sbom");

        HttpResponse<byte[]> filtered = send("GET", "/v2/" + REPO + "/referrers/" + imageDigest + "?artifactType=other/type", null);
        assertThat(header(filtered, "OCI-Filters-Applied")).isEqualTo("artifactType");
        assertThat(new JsonObject(new String(filtered.body(), StandardCharsets.UTF_8)).getJsonArray("manifests")).isEmpty();
        HttpResponse<byte[]> nothing = send("GET", "/v2/" + REPO + "/referrers/" + sha("none".getBytes()), null);
        assertThat(nothing.statusCode()).isEqualTo(200);
        assertThat(new JsonObject(new String(nothing.body(), StandardCharsets.UTF_8)).getJsonArray("manifests")).isEmpty();
    }

    // ---------------------------------------------------------------- content management

    @Test
    @Order(30)
    void deletingATagKeepsTheManifestByDigest() throws Exception {
        assertThat(send("DELETE", "/v2/" + REPO + "/manifests/a", null).statusCode()).isEqualTo(202);
        assertThat(send("GET", "/v2/" + REPO + "/manifests/a", null).statusCode()).isEqualTo(404);
        JsonObject tags = new JsonObject(new String(send("GET", "/v2/" + REPO + "/tags/list", null).body(), StandardCharsets.UTF_8));
        assertThat(tags.getJsonArray("tags").getList()).doesNotContain("a").contains("b");
        assertThat(send("GET", "/v2/" + REPO + "/manifests/" + imageDigest, null).statusCode()).isEqualTo(200);
    }

    @Test
    @Order(31)
    void deletingAManifestByDigestRemovesItAndItsTags() throws Exception {
        assertThat(send("DELETE", "/v2/" + REPO + "/manifests/" + imageDigest, null).statusCode()).isEqualTo(202);
        assertThat(send("GET", "/v2/" + REPO + "/manifests/" + imageDigest, null).statusCode()).isEqualTo(404);
        assertThat(send("GET", "/v2/" + REPO + "/manifests/b", null).statusCode()).isEqualTo(404);
        HttpResponse<byte[]> again = send("DELETE", "/v2/" + REPO + "/manifests/" + imageDigest, null);
        assertThat(again.statusCode()).isEqualTo(404);
        assertThat(code(again)).isEqualTo("MANIFEST_UNKNOWN");
    }

    @Test
    @Order(32)
    void deletingABlobRemovesItFromTheRepository() throws Exception {
        assertThat(send("DELETE", "/v2/" + REPO + "/blobs/" + sha(layer), null).statusCode()).isEqualTo(202);
        assertThat(send("GET", "/v2/" + REPO + "/blobs/" + sha(layer), null).statusCode()).isEqualTo(404);
        assertThat(send("GET", "/v2/team/other/blobs/" + sha(layer), null).statusCode()).isEqualTo(200); // mounted there
    }

    // ---------------------------------------------------------------- beside the cache

    @Test
    @Order(40)
    void hostedNamesNeverReachTheUpstream_andOtherNamesStillRefusePushes() throws Exception {
        // The upstream has team/app:upstream-only; a hosted name is served from local storage alone.
        assertThat(send("GET", registryUrl + "/v2/" + REPO + "/manifests/upstream-only", null, "Accept", OCI_MANIFEST)
                .statusCode()).isEqualTo(200);
        HttpResponse<byte[]> r = send("GET", "/v2/" + REPO + "/manifests/upstream-only", null, "Accept", OCI_MANIFEST);
        assertThat(r.statusCode()).isEqualTo(404);
        assertThat(code(r)).isEqualTo("MANIFEST_UNKNOWN");
        HttpResponse<byte[]> push = send("POST", "/v2/library/alpine/blobs/uploads/", null);
        assertThat(push.statusCode()).isEqualTo(405);
        assertThat(code(push)).isEqualTo("UNSUPPORTED");
        HttpResponse<byte[]> put = send("PUT", "/v2/library/alpine/manifests/1", imageJson.getBytes(StandardCharsets.UTF_8),
                "Content-Type", OCI_MANIFEST);
        assertThat(put.statusCode()).isEqualTo(405);
    }

    @Test
    @Order(41)
    void metricsCountPushesAndHostedContent() throws Exception {
        String metrics = RealParts.get(mirrorUrl + "/metrics");
        assertThat(metrics).containsPattern("registrymirror_hosted_pushes_total\\{kind=\"blob\"} [1-9]");
        assertThat(metrics).containsPattern("registrymirror_hosted_pushes_total\\{kind=\"manifest\"} [1-9]");
        assertThat(metrics).containsPattern("registrymirror_hosted_pushed_bytes_total [1-9]");
        assertThat(metrics).containsPattern("registrymirror_hosted_stored_bytes [1-9]");
        assertThat(metrics).containsPattern("registrymirror_hosted_push_refusals_total\\{reason=\"invalid\"} [1-9]");
        assertThat(metrics).contains("registrymirror_hosted_stored_items{kind=\"blob\"}");
    }
}
