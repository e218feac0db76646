package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Path;
import java.util.ArrayList;
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
 * The distribution spec's pull and content-discovery rules (the conformance suite's cases), with
 * CNCF Distribution 2.8 as the upstream: it ignores {@code n} and {@code last}, does not sort, and
 * has no referrers API, so the mirror's answers must follow the spec on their own.
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class ConformanceIT {
    private static final List<String> TAGS = List.of("v10", "1.9", "latest", "v2", "A", "1.10", "_x", "a.b", "a-b",
            "sha-1", "zz", "0");
    private static final String COSIGN = "application/vnd.dev.cosign.artifact.sig.v1+json";

    @TempDir
    static Path work;
    static RealParts.Child registry;
    static RealParts.Child mirror;
    static String mirrorUrl;
    static String registryUrl;
    static Digest image;
    static Digest signature;
    static final HttpClient http = HttpClient.newHttpClient();

    @BeforeAll
    static void start() throws Exception {
        int registryPort = RealParts.freePort();
        registryUrl = "http://127.0.0.1:" + registryPort;
        registry = RealParts.registry(work.resolve("registry"), registryPort, null);
        RealParts.awaitUp(registryUrl + "/v2/", registry);
        RegistryApi api = new RegistryApi(registryUrl);
        byte[] layer = new byte[4096];
        new Random(1).nextBytes(layer);
        String manifest = api.image("team/app", "application/vnd.oci.image.config.v1+json", layer);
        for (String t : TAGS) {
            image = api.manifest("team/app", t, "application/vnd.oci.image.manifest.v1+json", manifest);
        }
        // A signature kept with the referrers tag schema: an index under the tag sha256-<hex of the image>.
        String sig = api.image("team/app", COSIGN, "signature".getBytes());
        signature = api.manifest("team/app", Digest.of("sha256", sig.getBytes()).toString(),
                "application/vnd.oci.image.manifest.v1+json", sig);
        api.manifest("team/app", "sha256-" + image.hex(), "application/vnd.oci.image.index.v1+json",
                "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{"
                        + "\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" + signature
                        + "\",\"size\":" + sig.length() + ",\"artifactType\":\"" + COSIGN + "\"}]}");

        int mirrorPort = RealParts.freePort();
        mirrorUrl = "http://127.0.0.1:" + mirrorPort;
        mirror = RealParts.mirror(work.resolve("mirror"), mirrorPort, "--storage", work.resolve("mirror/data").toString(),
                "--upstream", registryUrl);
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

    static HttpResponse<String> get(String path) throws Exception {
        return http.send(HttpRequest.newBuilder(URI.create(mirrorUrl + path)).build(), HttpResponse.BodyHandlers.ofString());
    }

    static List<String> tags(HttpResponse<String> r) {
        List<String> out = new ArrayList<>();
        new JsonObject(r.body()).getJsonArray("tags").forEach(t -> out.add((String) t));
        return out;
    }

    static List<String> sorted() {
        List<String> all = new ArrayList<>(TAGS);
        all.add("sha256-" + image.hex());
        all.sort(String::compareTo);
        return all;
    }

    @Test
    @Order(1)
    void anInvalidManifestNameIs404ForGetAndHead() throws Exception {
        HttpResponse<String> r = get("/v2/team/app/manifests/.INVALID_MANIFEST_NAME");
        assertThat(r.statusCode()).isEqualTo(404);
        assertThat(r.body()).contains("\"code\":\"MANIFEST_UNKNOWN\"");
        HttpResponse<Void> head = http.send(HttpRequest.newBuilder(URI.create(mirrorUrl
                + "/v2/team/app/manifests/.INVALID_MANIFEST_NAME")).method("HEAD", HttpRequest.BodyPublishers.noBody())
                .build(), HttpResponse.BodyHandlers.discarding());
        assertThat(head.statusCode()).isEqualTo(404);
    }

    @Test
    @Order(2)
    void tagListsAreSortedAndPagedAsTheSpecSays() throws Exception {
        // The upstream itself ignores n: all its tags come back, without a Link.
        assertThat(new JsonObject(RealParts.get(registryUrl + "/v2/team/app/tags/list?n=4")).getJsonArray("tags"))
                .hasSize(TAGS.size() + 1);
        HttpResponse<String> all = get("/v2/team/app/tags/list");
        assertThat(tags(all)).isEqualTo(sorted());
        assertThat(all.headers().firstValue("Link")).isEmpty();

        HttpResponse<String> first = get("/v2/team/app/tags/list?n=4");
        assertThat(tags(first)).isEqualTo(sorted().subList(0, 4));
        assertThat(first.headers().firstValue("Link"))
                .hasValue("</v2/team/app/tags/list?n=4&last=" + sorted().get(3) + ">; rel=\"next\"");

        List<String> walked = new ArrayList<>();
        String next = "/v2/team/app/tags/list?n=5&ns=docker.io";
        int pages = 0;
        while (next != null) {
            HttpResponse<String> page = get(next);
            walked.addAll(tags(page));
            pages++;
            next = page.headers().firstValue("Link").map(l -> l.substring(1, l.indexOf('>'))).orElse(null);
            if (next != null) {
                assertThat(next).endsWith("&ns=docker.io");
            }
        }
        assertThat(walked).isEqualTo(sorted());
        assertThat(pages).isEqualTo(3); // 13 tags in pages of 5

        HttpResponse<String> zero = get("/v2/team/app/tags/list?n=0");
        assertThat(tags(zero)).isEmpty();
        assertThat(zero.headers().firstValue("Link")).isEmpty();
        assertThat(tags(get("/v2/team/app/tags/list?last=v10"))).isEqualTo(List.of("v2", "zz"));
        assertThat(tags(get("/v2/team/app/tags/list?n=2&last=latest"))).isEqualTo(List.of("sha-1", "sha256-" + image.hex()));
        assertThat(get("/v2/team/nothing/tags/list").statusCode()).isEqualTo(404);
    }

    @Test
    @Order(3)
    void referrersComeFromTheTagSchemaOfAnUpstreamWithoutTheApi() throws Exception {
        HttpResponse<String> r = get("/v2/team/app/referrers/" + image);
        assertThat(r.statusCode()).isEqualTo(200);
        JsonArray manifests = new JsonObject(r.body()).getJsonArray("manifests");
        assertThat(manifests).hasSize(1);
        assertThat(manifests.getJsonObject(0).getString("digest")).isEqualTo(signature.toString());
        HttpResponse<String> filtered = get("/v2/team/app/referrers/" + image + "?artifactType=application%2Fnone");
        assertThat(new JsonObject(filtered.body()).getJsonArray("manifests")).isEmpty();
        assertThat(filtered.headers().firstValue("OCI-Filters-Applied")).hasValue("artifactType");
        assertThat(new JsonObject(get("/v2/team/app/referrers/" + signature).body()).getJsonArray("manifests")).isEmpty();
    }

    @Test
    @Order(4)
    void theLastGoodTagListIsServedWhileTheUpstreamIsDown() throws Exception {
        HttpResponse<String> before = get("/v2/team/app/tags/list?n=4");
        registry.close();
        HttpResponse<String> during = get("/v2/team/app/tags/list?n=4");
        assertThat(during.statusCode()).isEqualTo(200);
        assertThat(during.body()).isEqualTo(before.body());
        assertThat(during.headers().firstValue("Link")).isEqualTo(before.headers().firstValue("Link"));
        assertThat(get("/metrics").body()).contains("registrymirror_stale_served_total{reason=\"unreachable\",upstream=\"docker.io\"} 1.0");
    }
}
