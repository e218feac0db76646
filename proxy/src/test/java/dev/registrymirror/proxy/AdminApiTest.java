package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import ch.qos.logback.classic.spi.ILoggingEvent;
import dev.registrymirror.cache.Digest;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.time.Instant;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** The admin API: its token, prefetch jobs, the listing of what is cached, and removals. */
class AdminApiTest extends MirrorTestBase {
    static final String TOKEN = "admin-token-0123456789abcdef";
    String admin = "admin: {token: " + TOKEN + "}\n";

    @Override
    String topLevelYaml() {
        return "\n" + admin;
    }

    @AfterEach
    void noSecretInTheLogs() {
        assertThat(logged.list).extracting(ILoggingEvent::getFormattedMessage)
                .noneMatch(m -> m.contains(TOKEN) || m.contains("not-the-token"));
    }

    private HttpResponse<byte[]> call(String method, String path, String body, String... headers) {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(url(path))).method(method,
                body == null ? HttpRequest.BodyPublishers.noBody() : HttpRequest.BodyPublishers.ofString(body));
        String[] all = new String[headers.length + 2];
        all[0] = "Authorization";
        all[1] = "Bearer " + TOKEN;
        System.arraycopy(headers, 0, all, 2, headers.length);
        return send(b, all);
    }

    private JsonObject json(HttpResponse<byte[]> r, int status) {
        assertThat(r.statusCode()).as(body(r)).isEqualTo(status);
        assertThat(r.headers().firstValue("Content-Type")).contains("application/json");
        return new JsonObject(body(r));
    }

    @Test
    void theApiIsOffWithoutAToken() {
        admin = "";
        startMirror();
        HttpResponse<byte[]> r = call("GET", "/admin/repositories", null);
        assertThat(r.statusCode()).isEqualTo(404);
        assertThat(body(r)).contains("the admin API is off; set admin.token");
    }

    @Test
    void everyCallNeedsTheToken() {
        startMirror();
        for (String[] attempt : new String[][]{{}, {"Authorization", "Bearer not-the-token"},
                {"Authorization", "Basic " + java.util.Base64.getEncoder().encodeToString(("x:" + TOKEN).getBytes())},
                {"Authorization", "Bearer " + TOKEN + "x"}}) {
            for (String[] call : new String[][]{{"GET", "/admin/repositories"}, {"POST", "/admin/prefetch"},
                    {"DELETE", "/admin/digests/sha256:" + "0".repeat(64)}, {"GET", "/admin/nothing"}}) {
                HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(url(call[1]))).method(call[0],
                        HttpRequest.BodyPublishers.ofString("{\"image\":\"docker.io/library/alpine:1\"}"));
                HttpResponse<byte[]> r = send(b, attempt);
                assertThat(r.statusCode()).as(String.join(" ", call) + " " + String.join(" ", attempt)).isEqualTo(401);
                assertThat(r.headers().firstValue("WWW-Authenticate")).contains("Bearer realm=\"registry-mirror admin\"");
                assertThat(body(r)).contains("\"code\":\"UNAUTHORIZED\"").doesNotContain(TOKEN);
            }
        }
        assertThat(hub.count("registry", "GET", "/manifests/")).as("no refused prefetch ran").isZero();
        assertThat(logged.list).extracting(ILoggingEvent::getFormattedMessage)
                .anyMatch(m -> m.startsWith("admin: refused GET /admin/repositories from 127.0.0.1: wrong token"))
                .anyMatch(m -> m.startsWith("admin: refused GET /admin/repositories from 127.0.0.1: no Authorization header"));
        assertThat(Exposition.value(mirror.metrics().scrape(),
                "registrymirror_requests_seconds_count{method=\"GET\",route=\"admin\",status=\"401\"}")).isEqualTo(8);
    }

    @Test
    void aPrefetchJobFetchesTheImageAndReportsItsProgress() throws Exception {
        byte[] layer = randomBytes(400_000, 7);
        hub.putImage("library/alpine", "3.19", layer);
        startMirror();
        HttpResponse<byte[]> r = call("POST", "/admin/prefetch", "{\"image\": \"docker.io/alpine:3.19\"}");
        JsonObject job = json(r, 202);
        assertThat(job.getString("image")).isEqualTo("docker.io/library/alpine:3.19");
        assertThat(job.getString("trigger")).isEqualTo("api");
        assertThat(r.headers().firstValue("Location")).contains("/admin/prefetch/" + job.getString("id"));

        JsonObject done = awaitJob(job.getString("id"));
        assertThat(done.getString("state")).isEqualTo("done");
        assertThat(done.getLong("manifests")).isEqualTo(1);
        assertThat(done.getLong("blobs")).isEqualTo(2);
        assertThat(done.getLong("blobsDone")).isEqualTo(2);
        assertThat(done.getLong("bytesDone")).isEqualTo(done.getLong("bytes")).isGreaterThan(400_000L);
        assertThat(hub.count("cdn", "GET", "/blobs/")).isEqualTo(2);
        assertThat(get("/v2/library/alpine/blobs/" + Digest.of("sha256", layer)).body()).isEqualTo(layer);
        assertThat(hub.count("cdn", "GET", "/blobs/")).as("the client's pull cost no blob request").isEqualTo(2);

        JsonArray jobs = json(call("GET", "/admin/prefetch", null), 200).getJsonArray("jobs");
        assertThat(jobs.getJsonObject(0).getString("id")).isEqualTo(job.getString("id"));
        assertThat(logged.list).extracting(ILoggingEvent::getFormattedMessage)
                .anyMatch(m -> m.equals("admin: prefetch of docker.io/library/alpine:3.19 (job " + job.getString("id")
                        + ") asked by 127.0.0.1"));
    }

    @Test
    void aFailedJobSaysWhy() throws Exception {
        startMirror();
        JsonObject job = json(call("POST", "/admin/prefetch", "{\"image\": \"docker.io/library/missing:1\"}"), 202);
        JsonObject done = awaitJob(job.getString("id"));
        assertThat(done.getString("state")).isEqualTo("failed");
        assertThat(done.getString("error")).isEqualTo("manifest 1: HTTP 404 MANIFEST_UNKNOWN: manifest library/missing:1"
                + " not found upstream (docker.io)");
        assertThat(json(call("GET", "/admin/prefetch/999", null), 404).encode()).contains("no prefetch job 999");
    }

    @Test
    void badPrefetchRequestsAreRefusedWithAReason() {
        startMirror();
        assertThat(json(call("POST", "/admin/prefetch", "{\"image\": \"quay.io/x/y:1\"}"), 400).encode())
                .contains("NAME_INVALID").contains("names upstream \\\"quay.io\\\", which is not configured");
        assertThat(json(call("POST", "/admin/prefetch", "{\"image\": \"docker.io/alpine:3\", \"platforms\": [\"amd64\"]}"),
                400).encode()).contains("is not <os>/<architecture>");
        assertThat(json(call("POST", "/admin/prefetch", "not json"), 400).encode()).contains("the body must be JSON");
        assertThat(call("POST", "/admin/prefetch", "{\"image\":\"" + "x".repeat(70_000) + "\"}").statusCode())
                .isEqualTo(413);
        assertThat(call("PUT", "/admin/prefetch", "{}").statusCode()).isEqualTo(405);
        assertThat(hub.count("registry", "GET", "/manifests/")).isZero();
    }

    @Test
    void theListingShowsTagsWithSizesAndLastPullWithoutCountingAsAPull() {
        byte[] layer = randomBytes(300_000, 8);
        Digest manifest = hub.putImage("library/alpine", "3.19", layer);
        hub.putImage("library/alpine", "3.20", randomBytes(1000, 9));
        hub.putImage("acme/tool", "v1", randomBytes(2000, 10));
        startMirror();
        Instant pulled = clock.instant();
        pull("library/alpine", "3.19");
        pull("library/alpine", "3.20");
        pull("acme/tool", "v1");
        clock.advance(Duration.ofHours(3));

        JsonObject page = json(call("GET", "/admin/repositories", null), 200);
        JsonArray repos = page.getJsonArray("repositories");
        assertThat(repos.stream().map(o -> ((JsonObject) o).getString("name")))
                .containsExactly("docker.io/acme/tool", "docker.io/library/alpine");
        JsonObject alpine = repos.getJsonObject(1);
        JsonObject t319 = alpine.getJsonArray("tags").getJsonObject(0);
        assertThat(t319.getString("tag")).isEqualTo("3.19");
        assertThat(t319.getString("digest")).isEqualTo(manifest.toString());
        long manifestSize = hub.manifestBytes("library/alpine", manifest).length;
        long expected = manifestSize + layer.length + configSize("library/alpine", manifest);
        assertThat(t319.getLong("size")).isEqualTo(expected);
        assertThat(t319.getLong("cachedBytes")).isEqualTo(expected);
        assertThat(Duration.between(Instant.parse(t319.getString("lastPull")), pulled).abs()).isLessThan(Duration.ofMinutes(1));
        assertThat(alpine.getLong("size")).isEqualTo(expected + alpine.getJsonArray("tags").getJsonObject(1).getLong("size"));

        // Listing again after more time: the listing itself was no pull.
        clock.advance(Duration.ofHours(1));
        JsonObject again = json(call("GET", "/admin/repositories/docker.io/alpine", null), 200);
        assertThat(again.getJsonArray("tags").getJsonObject(0).getString("lastPull")).isEqualTo(t319.getString("lastPull"));

        // Paged like the catalog.
        HttpResponse<byte[]> first = call("GET", "/admin/repositories?n=1", null);
        assertThat(json(first, 200).getJsonArray("repositories")).hasSize(1);
        assertThat(first.headers().firstValue("Link"))
                .contains("</admin/repositories?n=1&last=docker.io%2Facme%2Ftool>; rel=\"next\"");
        HttpResponse<byte[]> second = call("GET", "/admin/repositories?n=1&last=docker.io%2Facme%2Ftool", null);
        assertThat(json(second, 200).getJsonArray("repositories").getJsonObject(0).getString("name"))
                .isEqualTo("docker.io/library/alpine");
        assertThat(second.headers().firstValue("Link")).isEmpty();
        assertThat(call("GET", "/admin/repositories?n=0", null).statusCode()).isEqualTo(400);
        assertThat(json(call("GET", "/admin/repositories/docker.io/nothing", null), 404).encode()).contains("NAME_UNKNOWN");
        assertThat(json(call("GET", "/admin/repositories/quay.io/x", null), 400).encode()).contains("NAME_INVALID");
    }

    @Test
    void removingTagsMakesTheNextPullResolveThemUpstreamAndKeepsTheLayers() {
        byte[] layer = randomBytes(200_000, 11);
        hub.putImage("library/alpine", "3.19", layer);
        hub.putImage("library/alpine", "3.20", randomBytes(1000, 12));
        startMirror();
        pull("library/alpine", "3.19");
        pull("library/alpine", "3.20");
        long tagAsks = hub.count("registry", "GET", "/manifests/3.19");

        JsonObject one = json(call("DELETE", "/admin/repositories/docker.io/library/alpine?tag=3.20", null), 200);
        assertThat(one.getInteger("removedTags")).isEqualTo(1);
        assertThat(json(call("GET", "/admin/repositories/docker.io/library/alpine", null), 200).getJsonArray("tags"))
                .hasSize(1);
        JsonObject all = json(call("DELETE", "/admin/repositories/docker.io/library/alpine", null), 200);
        assertThat(all.getInteger("removedTags")).isEqualTo(1);
        assertThat(call("DELETE", "/admin/repositories/docker.io/library/alpine", null).statusCode()).isEqualTo(404);

        long blobAsks = hub.count("cdn", "GET", "/blobs/");
        pull("library/alpine", "3.19");
        assertThat(hub.count("registry", "GET", "/manifests/3.19")).as("asked upstream again").isEqualTo(tagAsks + 1);
        assertThat(hub.count("cdn", "GET", "/blobs/")).as("the layers stayed").isEqualTo(blobAsks);
        assertThat(logged.list).extracting(ILoggingEvent::getFormattedMessage)
                .anyMatch(m -> m.equals("admin: removed 1 tag of docker.io/library/alpine [3.20] from the cache, asked by 127.0.0.1"));
    }

    @Test
    void removingADigestMakesTheNextRequestFetchItAgain() {
        byte[] layer = randomBytes(200_000, 13);
        Digest manifest = hub.putImage("library/alpine", "3.19", layer);
        Digest layerDigest = Digest.of("sha256", layer);
        startMirror();
        pull("library/alpine", "3.19");
        long blobAsks = hub.count("cdn", "GET", "/blobs/" + layerDigest);

        JsonObject removed = json(call("DELETE", "/admin/digests/" + layerDigest, null), 200);
        assertThat(removed.getJsonArray("removed")).containsExactly("blob");
        assertThat(json(call("DELETE", "/admin/digests/" + layerDigest, null), 404).encode()).contains("is not in the cache");
        assertThat(get("/v2/library/alpine/blobs/" + layerDigest).body()).isEqualTo(layer);
        assertThat(hub.count("cdn", "GET", "/blobs/" + layerDigest)).isEqualTo(blobAsks + 1);

        assertThat(json(call("DELETE", "/admin/digests/" + manifest, null), 200).getJsonArray("removed"))
                .containsExactly("manifest");
        long manifestAsks = hub.count("registry", "GET", "/manifests/" + manifest);
        HttpResponse<byte[]> m = get("/v2/library/alpine/manifests/3.19", "Accept", TYPES);
        assertThat(m.statusCode()).isEqualTo(200);
        assertThat(m.headers().firstValue("Docker-Content-Digest")).contains(manifest.toString());
        assertThat(hub.count("registry", "GET", "/manifests/")).as("fetched again")
                .isGreaterThan(manifestAsks);
        assertThat(json(call("DELETE", "/admin/digests/sha256:abc", null), 400).encode()).contains("DIGEST_INVALID");
    }

    private void pull(String repo, String tag) {
        HttpResponse<byte[]> m = get("/v2/" + repo + "/manifests/" + tag, "Accept", TYPES);
        assertThat(m.statusCode()).as(body(m)).isEqualTo(200);
        JsonObject manifest = new JsonObject(body(m));
        assertThat(get("/v2/" + repo + "/blobs/" + manifest.getJsonObject("config").getString("digest")).statusCode())
                .isEqualTo(200);
        for (Object l : manifest.getJsonArray("layers")) {
            String digest = ((JsonObject) l).getString("digest");
            assertThat(get("/v2/" + repo + "/blobs/" + digest).statusCode()).isEqualTo(200);
            awaitStored(Digest.parse(digest));
        }
    }

    /** Waits for a blob just served to be committed (the client has its bytes a moment before). */
    private void awaitStored(Digest d) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        try {
            while (mirror.storage().blob(d).isEmpty()) {
                assertThat(System.nanoTime()).as(d + " stored within 20 s").isLessThan(deadline);
                Thread.sleep(5); // polling the mirror's own work, not waiting for time to pass
            }
        } catch (java.io.IOException | InterruptedException e) {
            throw new AssertionError(e);
        }
    }

    private long configSize(String repo, Digest manifest) {
        return new JsonObject(io.vertx.core.buffer.Buffer.buffer(hub.manifestBytes(repo, manifest)))
                .getJsonObject("config").getLong("size");
    }

    private JsonObject awaitJob(String id) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (true) {
            JsonObject job = json(call("GET", "/admin/prefetch/" + id, null), 200);
            if (!job.getString("state").equals("running")) {
                return job;
            }
            assertThat(System.nanoTime()).as("job " + id + " finished within 20 s").isLessThan(deadline);
            Thread.sleep(10); // polling the mirror's own work, not waiting for time to pass
        }
    }
}
