package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import dev.registrymirror.cache.HostedStore;
import io.vertx.core.json.JsonObject;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Hosted repositories on a mirror with several event loops: who may push, the quota, unfinished
 * uploads expiring, collection while pushes run, and blobs shared with the cache (stored once, and
 * never lost to the cache's eviction).
 */
class HostedTest extends MirrorTestBase {
    private static final String OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
    @TempDir
    Path dir;
    String hosted = "hosted: {repositories: [\"team/**\"], delete: true}\n";
    String access = """
            access:
              rules:
                - repositories: ["team/**"]
                  pull: [anonymous]
                  push: [anonymous]
                - repositories: ["**"]
                  pull: [anonymous]
            """;

    /** More keys for {@code storage:} (the cache's limits), each starting with a comma. */
    String cacheLimits = "";

    @Override
    String topLevelYaml() {
        return "\n" + hosted + access;
    }

    @Override
    String storageYaml() {
        return cacheLimits;
    }

    HttpResponse<byte[]> send(String method, String path, byte[] body, String... headers) {
        return send(HttpRequest.newBuilder(URI.create(url(path))).method(method, body == null
                ? HttpRequest.BodyPublishers.noBody() : HttpRequest.BodyPublishers.ofByteArray(body)), headers);
    }

    /** An htpasswd file of alice and bob (bcrypt), with {@link AccessTest}'s passwords. */
    Path aliceAndBob() throws IOException {
        return Files.writeString(dir.resolve("htpasswd"), AccessTest.entry("alice", AccessTest.ALICE_PW)
                + AccessTest.entry("bob", AccessTest.BOB_PW));
    }

    /** Pushes a blob in one POST; yields the status. */
    int pushBlob(String repo, byte[] bytes, String... headers) {
        return send("POST", "/v2/" + repo + "/blobs/uploads/?digest=" + Digest.of("sha256", bytes), bytes, headers)
                .statusCode();
    }

    static String image(byte[] config, byte[] layer) {
        return "{\"schemaVersion\":2,\"mediaType\":\"" + OCI_MANIFEST + "\",\"config\":{\"mediaType\":"
                + "\"application/vnd.oci.image.config.v1+json\",\"digest\":\"" + Digest.of("sha256", config)
                + "\",\"size\":" + config.length + "},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\","
                + "\"digest\":\"" + Digest.of("sha256", layer) + "\",\"size\":" + layer.length + "}]}";
    }

    /** Pushes config, layer and manifest; yields the manifest's status. */
    int pushImage(String repo, String tag, byte[] layer, String... headers) {
        byte[] config = ("{\"tag\":\"" + tag + "\"}").getBytes(StandardCharsets.UTF_8);
        assertThat(pushBlob(repo, config, headers)).isEqualTo(201);
        assertThat(pushBlob(repo, layer, headers)).isEqualTo(201);
        String[] h = new String[headers.length + 2];
        System.arraycopy(headers, 0, h, 0, headers.length);
        h[headers.length] = "Content-Type";
        h[headers.length + 1] = OCI_MANIFEST;
        return send("PUT", "/v2/" + repo + "/manifests/" + tag, image(config, layer).getBytes(StandardCharsets.UTF_8), h)
                .statusCode();
    }

    @Test
    void onlyTheRulesPushListsMayPush_andAMountNeedsTheRightToPullItsSource() throws Exception {
        Path htpasswd = aliceAndBob();
        access = """
                access:
                  users: '%s'
                  rules:
                    - repositories: ["team/secret"]
                      pull: [alice]
                      push: [alice]
                    - repositories: ["team/**"]
                      pull: [anonymous]
                      push: [alice]
                    - repositories: ["**"]
                      pull: [anonymous]
                """.formatted(htpasswd);
        startMirror();
        String alice = AccessTest.basic("alice", AccessTest.ALICE_PW);
        String bob = AccessTest.basic("bob", AccessTest.BOB_PW);
        byte[] layer = randomBytes(10_000, 1);

        HttpResponse<byte[]> anonymous = send("POST", "/v2/team/app/blobs/uploads/", null);
        assertThat(anonymous.statusCode()).isEqualTo(401);
        assertThat(anonymous.headers().firstValue("WWW-Authenticate").orElseThrow())
                .startsWith("Bearer realm=").contains("scope=\"repository:team/app:pull,push\"");
        HttpResponse<byte[]> byBob = send("POST", "/v2/team/app/blobs/uploads/", null, "Authorization", bob);
        assertThat(byBob.statusCode()).isEqualTo(403);
        assertThat(body(byBob)).contains("DENIED", "bob may not push to team/app");

        assertThat(pushImage("team/app", "1", layer, "Authorization", alice)).isEqualTo(201);
        assertThat(get("/v2/team/app/manifests/1", "Accept", OCI_MANIFEST).statusCode()).isEqualTo(200); // anonymous pull

        // With a token from the token endpoint, as Docker does after docker login.
        HttpResponse<byte[]> token = get("/token?service=registry-mirror&scope=repository:team/app:pull,push",
                "Authorization", alice);
        String bearer = "Bearer " + new JsonObject(body(token)).getString("token");
        assertThat(pushBlob("team/app", randomBytes(100, 2), "Authorization", bearer)).isEqualTo(201);

        // team/secret is alice's alone: she may mount from it; anonymous clients cannot read it.
        assertThat(pushBlob("team/secret", layer, "Authorization", alice)).isEqualTo(201);
        Digest d = Digest.of("sha256", layer);
        HttpResponse<byte[]> aliceMount = send("POST", "/v2/team/other/blobs/uploads/?mount=" + d + "&from=team/secret",
                null, "Authorization", alice);
        assertThat(aliceMount.statusCode()).isEqualTo(201);
        assertThat(get("/v2/team/secret/blobs/" + d).statusCode()).isEqualTo(401);
    }

    @Test
    void aMountFromARepositoryTheClientMayNotReadStartsAnUploadInstead() throws Exception {
        Path htpasswd = aliceAndBob();
        access = """
                access:
                  users: '%s'
                  rules:
                    - repositories: ["team/secret"]
                      pull: [alice]
                      push: [alice]
                    - repositories: ["team/**"]
                      pull: [authenticated]
                      push: [alice, bob]
                """.formatted(htpasswd);
        startMirror();
        byte[] layer = randomBytes(10_000, 3);
        assertThat(pushBlob("team/secret", layer, "Authorization", AccessTest.basic("alice", AccessTest.ALICE_PW)))
                .isEqualTo(201);
        HttpResponse<byte[]> bobMount = send("POST", "/v2/team/bob/blobs/uploads/?mount=" + Digest.of("sha256", layer)
                + "&from=team/secret", null, "Authorization", AccessTest.basic("bob", AccessTest.BOB_PW));
        assertThat(bobMount.statusCode()).isEqualTo(202); // as if team/secret lacked it: nothing learnt, nothing taken
        assertThat(get("/v2/team/bob/blobs/" + Digest.of("sha256", layer), "Authorization",
                AccessTest.basic("bob", AccessTest.BOB_PW)).statusCode()).isEqualTo(404);
    }

    @Test
    void withoutAccessRulesNobodyPushes_butHostedImagesStillPull() {
        access = "";
        startMirror();
        HttpResponse<byte[]> r = send("POST", "/v2/team/app/blobs/uploads/", null);
        assertThat(r.statusCode()).isEqualTo(403);
        assertThat(body(r)).contains("access.rules[].push");
        assertThat(get("/v2/team/app/tags/list").statusCode()).isEqualTo(404); // NAME_UNKNOWN, not refused
    }

    @Test
    void overTheQuotaAPushIsRefused_andNothingStoredIsLost() {
        hosted = "hosted: {repositories: [\"team/**\"], maxSize: 1MiB}\n";
        startMirror();
        byte[] first = randomBytes(600_000, 4);
        assertThat(pushImage("team/app", "1", first)).isEqualTo(201);
        HttpResponse<byte[]> over = send("POST", "/v2/team/app/blobs/uploads/?digest="
                + Digest.of("sha256", randomBytes(600_000, 5)), randomBytes(600_000, 5));
        assertThat(over.statusCode()).isEqualTo(403);
        assertThat(body(over)).contains("DENIED", "over hosted.maxSize (1048576 bytes");
        assertThat(get("/v2/team/app/manifests/1", "Accept", OCI_MANIFEST).statusCode()).isEqualTo(200);
        assertThat(get("/v2/team/app/blobs/" + Digest.of("sha256", first)).body()).isEqualTo(first);
        assertThat(mirror.hosted().openUploads()).isZero();
        assertThat(mirror.metrics().scrape()).contains("registrymirror_hosted_push_refusals_total{reason=\"quota\"} 1.0")
                .contains("registrymirror_hosted_limit_bytes 1048576");
    }

    @Test
    void theQuotaBoundsWhatAnUploadWrites_notOnlyWhatItCommits() throws Exception {
        hosted = "hosted: {repositories: [\"team/**\"], maxSize: 1MiB}\n";
        startMirror();
        // Announced over the quota: refused before the body is asked for.
        try (java.net.Socket s = new java.net.Socket("127.0.0.1", mirror.port())) {
            s.setSoTimeout(5000);
            s.getOutputStream().write(("POST /v2/team/app/blobs/uploads/?digest=" + Digest.of("sha256", new byte[1])
                    + " HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\nExpect: 100-continue\r\n\r\n")
                    .getBytes(StandardCharsets.US_ASCII));
            assertThat(new String(s.getInputStream().readNBytes(12), StandardCharsets.US_ASCII)).isEqualTo("HTTP/1.1 403");
        }
        // Streamed without a length: stopped where it goes over, its session and data gone.
        String session = send("POST", "/v2/team/app/blobs/uploads/", null).headers().firstValue("Location").orElseThrow();
        String id = session.substring(session.lastIndexOf('/') + 1);
        HttpResponse<byte[]> over = send(HttpRequest.newBuilder(URI.create(url(session))).method("PATCH",
                HttpRequest.BodyPublishers.ofInputStream(() -> new java.io.ByteArrayInputStream(randomBytes(3 << 20, 70)))));
        assertThat(over.statusCode()).isEqualTo(403);
        assertThat(body(over)).contains("over hosted.maxSize");
        assertThat(get(session).statusCode()).isEqualTo(404);
        Path file = storage.resolve("hosted").resolve("uploads").resolve(id);
        long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
        while (Files.exists(file) && System.nanoTime() < deadline) {
            Thread.onSpinWait();
        }
        assertThat(file).doesNotExist();
    }

    @Test
    void aDiskThatRefusesAnUploadIsA503_notTheClientsFault() throws Exception {
        startMirror();
        String session = send("POST", "/v2/team/app/blobs/uploads/", null).headers().firstValue("Location").orElseThrow();
        Path file = storage.resolve("hosted").resolve("uploads").resolve(session.substring(session.lastIndexOf('/') + 1));
        Files.delete(file);
        Files.createSymbolicLink(file, Path.of("/dev/full")); // every write: no space left on device
        HttpResponse<byte[]> r = send("PATCH", session, randomBytes(100_000, 71), "Content-Type", "application/octet-stream");
        assertThat(r.statusCode()).isEqualTo(503);
        assertThat(body(r)).contains("UNAVAILABLE", "cannot store the upload");
        assertThat(mirror.metrics().scrape()).contains("registrymirror_storage_errors_total{reason=\"disk_full\"} 1.0");
    }

    @Test
    void aBlobDamagedOnTheDiskIsNeverServed_andAPushRestoresIt() throws Exception {
        startMirror();
        byte[] layer = randomBytes(200_000, 80);
        byte[] other = randomBytes(100_000, 81);
        assertThat(pushImage("team/app", "1", layer)).isEqualTo(201);
        assertThat(pushImage("team/app", "2", other)).isEqualTo(201);
        Digest d = Digest.of("sha256", layer);
        await(mirror.stop());
        mirror = null;
        // Bits flipped on the disk while the mirror was down: same size, other bytes.
        Path file = storage.resolve("hosted/blobs/sha256").resolve(d.hex().substring(0, 2)).resolve(d.hex());
        byte[] damaged = Files.readAllBytes(file);
        damaged[1000] ^= 0x55;
        Files.write(file, damaged);
        startMirror();
        HttpResponse<byte[]> get = get("/v2/team/app/blobs/" + d);
        assertThat(get.statusCode()).isEqualTo(404);
        assertThat(body(get)).contains("damaged");
        assertThat(logged.list).extracting(e -> e.getFormattedMessage())
                .anyMatch(m -> m.contains("hosted: blob " + d + " is damaged on the disk") && m.contains("[team/app]"));
        assertThat(get("/v2/team/app/blobs/" + Digest.of("sha256", other)).body()).isEqualTo(other); // checked, good
        // The team pushes the image again: the layer is uploaded anew (HEAD says it is missing) and served.
        assertThat(head("/v2/team/app/blobs/" + d).statusCode()).isEqualTo(404);
        assertThat(pushImage("team/app", "1", layer)).isEqualTo(201);
        assertThat(get("/v2/team/app/blobs/" + d).body()).isEqualTo(layer);
    }

    @Test
    void unfinishedUploadsExpireWithTheirData() {
        startMirror();
        HttpResponse<byte[]> open = send("POST", "/v2/team/app/blobs/uploads/", null);
        String session = open.headers().firstValue("Location").orElseThrow();
        assertThat(send("PATCH", session, randomBytes(5000, 6), "Content-Type", "application/octet-stream").statusCode())
                .isEqualTo(202);
        String id = session.substring(session.lastIndexOf('/') + 1);
        Path file = storage.resolve("hosted").resolve("uploads").resolve(id);
        assertThat(file).exists();
        clock.advance(Duration.ofHours(23));
        assertThat(mirror.hosted().expireUploads()).isZero();
        clock.advance(Duration.ofHours(2));
        assertThat(mirror.hosted().expireUploads()).isEqualTo(1);
        assertThat(get(session).statusCode()).isEqualTo(404);
        // The file goes on a worker thread: polled until gone.
        long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
        while (Files.exists(file) && System.nanoTime() < deadline) {
            Thread.onSpinWait();
        }
        assertThat(file).doesNotExist();
    }

    @Test
    void oneRequestAtATimePerUpload() throws Exception {
        startMirror();
        String session = send("POST", "/v2/team/app/blobs/uploads/", null).headers().firstValue("Location").orElseThrow();
        byte[] chunk = randomBytes(2000, 7);
        try (java.net.Socket slow = new java.net.Socket("127.0.0.1", mirror.port())) {
            // A PATCH whose body has only half arrived: it owns the session until the rest comes.
            java.io.OutputStream out = slow.getOutputStream();
            out.write(("PATCH " + session + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
                    + "Content-Length: " + chunk.length + "\r\n\r\n").getBytes(StandardCharsets.US_ASCII));
            out.write(chunk, 0, 1000);
            out.flush();
            // Once its first bytes are in the session's file, it is under way.
            String id = session.substring(session.lastIndexOf('/') + 1);
            Path file = storage.resolve("hosted").resolve("uploads").resolve(id);
            long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
            while ((!Files.exists(file) || Files.size(file) < 1000) && System.nanoTime() < deadline) {
                Thread.onSpinWait();
            }
            assertThat(Files.size(file)).isEqualTo(1000);
            HttpResponse<byte[]> second = send("PATCH", session, randomBytes(10, 8));
            assertThat(second.statusCode()).isEqualTo(416);
            assertThat(body(second)).contains("another request for upload");
            out.write(chunk, 1000, 1000);
            out.flush();
            String status = new String(slow.getInputStream().readNBytes(12), StandardCharsets.US_ASCII);
            assertThat(status).isEqualTo("HTTP/1.1 202");
        }
    }

    @Test
    void aClientThatExpects100ContinueIsToldToSendItsBody_andARefusedOneNeverSendsIt() throws Exception {
        startMirror();
        byte[] blob = randomBytes(3000, 40);
        for (String repo : new String[] {"team/app", "library/alpine"}) {
            try (java.net.Socket s = new java.net.Socket("127.0.0.1", mirror.port())) {
                s.setSoTimeout(5000);
                s.getOutputStream().write(("POST /v2/" + repo + "/blobs/uploads/?digest=" + Digest.of("sha256", blob)
                        + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: " + blob.length
                        + "\r\nExpect: 100-continue\r\n\r\n").getBytes(StandardCharsets.US_ASCII));
                java.io.InputStream in = s.getInputStream();
                String first = new String(in.readNBytes(12), StandardCharsets.US_ASCII);
                if (repo.equals("team/app")) {
                    assertThat(first).isEqualTo("HTTP/1.1 100");
                    s.getOutputStream().write(blob);
                    StringBuilder rest = new StringBuilder();
                    while (!rest.toString().contains("HTTP/1.1 201") && rest.length() < 2000) {
                        int c = in.read();
                        if (c < 0) {
                            break;
                        }
                        rest.append((char) c);
                    }
                    assertThat(rest.toString()).contains("HTTP/1.1 201");
                } else {
                    assertThat(first).isEqualTo("HTTP/1.1 405"); // refused before the body was asked for
                }
            }
        }
    }

    @Test
    void collectionRunsBesidePushes_andKeepsEverythingAManifestNames() throws Exception {
        startMirror();
        List<CompletableFuture<Integer>> pushes = new ArrayList<>();
        for (int i = 0; i < 12; i++) {
            int n = i;
            pushes.add(CompletableFuture.supplyAsync(() -> pushImage("team/app" + (n % 3), "v" + n, randomBytes(50_000, 100 + n))));
        }
        // Collections while the pushes run: with no grace at all, an uploaded blob is fair game until a
        // manifest names it; the pushes that lose a blob that way are answered MANIFEST_BLOB_UNKNOWN,
        // and whatever did commit must be whole.
        for (int i = 0; i < 20; i++) {
            await(vertx.executeBlocking(() -> mirror.hosted().store().collect(0)));
        }
        List<Integer> statuses = new ArrayList<>();
        for (CompletableFuture<Integer> p : pushes) {
            statuses.add(p.get());
        }
        assertThat(statuses).allMatch(s -> s == 201 || s == 400);
        await(vertx.executeBlocking(() -> mirror.hosted().store().collect(0)));
        for (int i = 0; i < 12; i++) {
            if (statuses.get(i) != 201) {
                continue;
            }
            String repo = "team/app" + (i % 3);
            HttpResponse<byte[]> m = get("/v2/" + repo + "/manifests/v" + i, "Accept", OCI_MANIFEST);
            assertThat(m.statusCode()).isEqualTo(200);
            assertThat(get("/v2/" + repo + "/blobs/" + Digest.of("sha256", randomBytes(50_000, 100 + i))).body())
                    .isEqualTo(randomBytes(50_000, 100 + i));
        }
        // With the configured grace (1h), nothing a push uploaded is at risk.
        byte[] pending = randomBytes(1000, 99);
        assertThat(pushBlob("team/app0", pending)).isEqualTo(201);
        await(mirror.hosted().collect());
        assertThat(get("/v2/team/app0/blobs/" + Digest.of("sha256", pending)).statusCode()).isEqualTo(200);
        clock.advance(Duration.ofMinutes(61));
        HostedStore.Collected c = await(mirror.hosted().collect());
        assertThat(c.blobs()).isEqualTo(1);
        assertThat(get("/v2/team/app0/blobs/" + Digest.of("sha256", pending)).statusCode()).isEqualTo(404);
        assertThat(mirror.metrics().scrape()).contains("registrymirror_hosted_gc_removed_total{kind=\"blob\"} 1.0");
    }

    @Test
    void aBlobBothPushedAndPulledThroughTheCacheIsStoredOnce_andTheCacheLosingItKeepsItHosted() throws Exception {
        startMirror();
        byte[] base = randomBytes(200_000, 11);
        Digest d = Digest.of("sha256", base);
        hub.putImage("library/base", "1", base);
        // Pulled through the cache first (a base image), then pushed as a layer of a team's image.
        assertThat(get("/v2/library/base/blobs/" + d).body()).isEqualTo(base);
        awaitStored(d);
        assertThat(pushImage("team/app", "1", base)).isEqualTo(201);
        Path cached = mirror.storage().blobs().find(d).orElseThrow().path();
        Path pushed = storage.resolve("hosted/blobs/sha256").resolve(d.hex().substring(0, 2)).resolve(d.hex());
        assertThat(Files.isSameFile(cached, pushed)).as("one file, two names").isTrue();

        // The cache drops its copy (an operator's removal here; eviction unlinks the same way).
        await(vertx.executeBlocking(() -> mirror.storage().remove(d)));
        assertThat(cached).doesNotExist();
        assertThat(get("/v2/team/app/blobs/" + d).body()).isEqualTo(base);

        // Pushed first, then pulled through the cache: the cache links the hosted file.
        byte[] other = randomBytes(150_000, 12);
        Digest o = Digest.of("sha256", other);
        assertThat(pushImage("team/app", "2", other)).isEqualTo(201);
        hub.putImage("library/other", "1", other);
        assertThat(get("/v2/library/other/blobs/" + o).body()).isEqualTo(other);
        awaitStored(o);
        Path pushedOther = storage.resolve("hosted/blobs/sha256").resolve(o.hex().substring(0, 2)).resolve(o.hex());
        assertThat(Files.isSameFile(mirror.storage().blobs().find(o).orElseThrow().path(), pushedOther)).isTrue();
    }

    @Test
    void operatorsSeeHostedRepositoriesApartFromCachedOnes() {
        hosted = hosted + "admin: {token: 'an-admin-token-of-some-length'}\n";
        access = """
                access:
                  rules:
                    - repositories: ["team/secret"]
                      pull: [nobody]
                      push: [anonymous]
                    - repositories: ["team/**"]
                      pull: [anonymous]
                      push: [anonymous]
                    - repositories: ["**"]
                      pull: [anonymous]
                """;
        startMirror();
        assertThat(pushImage("team/app", "1", randomBytes(1000, 30))).isEqualTo(201);
        assertThat(pushImage("team/app", "2", randomBytes(1000, 31))).isEqualTo(201);
        assertThat(pushImage("team/secret", "1", randomBytes(1000, 32))).isEqualTo(201);

        HttpResponse<byte[]> admin = get("/admin/hosted", "Authorization", "Bearer an-admin-token-of-some-length");
        assertThat(admin.statusCode()).isEqualTo(200);
        JsonObject a = new JsonObject(body(admin));
        assertThat(a.getLong("manifests")).isEqualTo(3);
        assertThat(a.getJsonArray("repositories").getList()).hasSize(2);
        assertThat(a.getJsonArray("repositories").getJsonObject(0).getString("name")).isEqualTo("team/app");
        assertThat(a.getJsonArray("repositories").getJsonObject(0).getLong("tags")).isEqualTo(2);
        assertThat(get("/admin/hosted").statusCode()).isEqualTo(401);

        HttpResponse<byte[]> gc = send("POST", "/admin/hosted/gc", null, "Authorization", "Bearer an-admin-token-of-some-length");
        assertThat(gc.statusCode()).isEqualTo(200);
        assertThat(new JsonObject(body(gc)).getLong("blobs")).isZero();

        // The status page's data: hosted repositories the caller may pull, the others counted.
        long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
        JsonObject h;
        do {
            h = new JsonObject(body(get("/status.json"))).getJsonObject("hosted");
        } while (h.getJsonArray("repositories").size() + h.getLong("otherRepositories") < 2 && System.nanoTime() < deadline);
        assertThat(h.getJsonArray("repositories").getJsonObject(0).getString("name")).isEqualTo("team/app");
        assertThat(h.getJsonArray("repositories").size()).isEqualTo(1);
        assertThat(h.getLong("otherRepositories")).isEqualTo(1);
        assertThat(h.getLong("usedBytes")).isPositive();
    }

    @Test
    void evictionPressureOnTheCacheNeverTouchesHostedContent() throws Exception {
        cacheLimits = ", maxSize: 64MiB, maxAge: 1d";
        startMirror();
        // A team image whose layer is also a cached base layer (one file, two names), and one of its own.
        byte[] base = randomBytes(20 << 20, 50);
        Digest d = Digest.of("sha256", base);
        hub.putImage("library/base", "1", base);
        assertThat(get("/v2/library/base/blobs/" + d).body()).isEqualTo(base);
        awaitStored(d);
        assertThat(pushImage("team/app", "1", base)).isEqualTo(201);
        byte[] own = randomBytes(5 << 20, 51);
        assertThat(pushImage("team/app", "2", own)).isEqualTo(201);
        // Far more than storage.maxSize goes through the cache, and everything cached grows old.
        for (int i = 0; i < 4; i++) {
            byte[] b = randomBytes(25 << 20, 60 + i);
            Digest bd = hub.putBlob(b);
            assertThat(get("/v2/library/other/blobs/" + bd).statusCode()).isEqualTo(200);
            assertThat(downloadsLeft()).isZero(); // committed (and the cache perhaps over its limit already)
        }
        mirror.storage().upkeep();
        clock.advance(Duration.ofDays(2));
        mirror.storage().upkeep();
        String metrics = mirror.metrics().scrape();
        assertThat(metrics).contains("registrymirror_stored_items{kind=\"blob\"} 0.0"); // the cache is empty
        assertThat(metrics).containsPattern("registrymirror_evictions_total\\{kind=\"blob\",reason=\"size\"} [1-9]");
        // Hosted content is whole, and counted on its own.
        assertThat(get("/v2/team/app/blobs/" + d).body()).isEqualTo(base);
        assertThat(get("/v2/team/app/blobs/" + Digest.of("sha256", own)).body()).isEqualTo(own);
        assertThat(get("/v2/team/app/manifests/1", "Accept", OCI_MANIFEST).statusCode()).isEqualTo(200);
        assertThat(get("/v2/team/app/manifests/2", "Accept", OCI_MANIFEST).statusCode()).isEqualTo(200);
        assertThat(mirror.hosted().store().bytes()).isGreaterThan(25L << 20);
    }

    private void awaitStored(Digest d) throws IOException {
        long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
        // The commit follows the last byte on a worker thread; its row comes before its file.
        while ((mirror.storage().blobs().find(d).isEmpty()
                || !Files.exists(mirror.storage().blobs().find(d).get().path())) && System.nanoTime() < deadline) {
            Thread.onSpinWait();
        }
        assertThat(mirror.storage().blobs().find(d)).isPresent();
    }
}
