package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import dev.registrymirror.proxy.manifest.MediaTypes;
import io.vertx.core.Future;
import io.vertx.core.http.HttpClient;
import io.vertx.core.http.HttpClientOptions;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.PoolOptions;
import io.vertx.core.http.RequestOptions;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Anyone can push a manifest of nearly 4 MB to Docker Hub, under as many tags as they like. A hundred
 * clients pulling a hundred such tags at once from the jar at {@code -Xmx256m}, with the upstream an
 * internet round trip away, are all served: the bodies held in memory share one budget, and nothing
 * parses a manifest into a tree.
 */
class ManifestMemoryIT extends FakeHubIT {
    static final int TAGS = 100;

    @TempDir
    Path dir;

    /** An image manifest of about {@code bytes} bytes: one config and as many layers as it takes. */
    static byte[] bigManifest(int bytes, int serial) {
        JsonArray layers = new JsonArray();
        int each = 156;
        for (int i = 0; i < bytes / each; i++) {
            layers.add(new JsonObject().put("mediaType", "application/vnd.oci.image.layer.v1.tar+gzip")
                    .put("digest", Digest.of("sha256", (serial + "/" + i).getBytes(StandardCharsets.UTF_8)).toString())
                    .put("size", 1000 + i));
        }
        return new JsonObject().put("schemaVersion", 2).put("mediaType", MediaTypes.OCI_MANIFEST)
                .put("config", new JsonObject().put("mediaType", "application/vnd.oci.image.config.v1+json")
                        .put("digest", Digest.of("sha256", ("config " + serial).getBytes(StandardCharsets.UTF_8)).toString())
                        .put("size", 100))
                .put("layers", layers).encode().getBytes(StandardCharsets.UTF_8);
    }

    @Test
    void aHundredPullsOfFourMegabyteManifestsUnderAHundredTagsAreAllServedAtXmx256m() throws Exception {
        Map<String, Digest> digests = new ConcurrentHashMap<>();
        for (int i = 0; i < TAGS; i++) {
            byte[] manifest = bigManifest(4_000_000, i);
            assertThat(manifest.length).isBetween(3_900_000, 4 * 1024 * 1024);
            digests.put("t" + i, hub.putManifest("huge/app", "t" + i, MediaTypes.OCI_MANIFEST, manifest));
        }
        hub.rateRemaining.set(Integer.MAX_VALUE);
        hub.registryDelayMillis = 300;

        int port = RealParts.freePort();
        Path config = Files.writeString(dir.resolve("mirror.yaml"), """
                server: {port: %d, host: 127.0.0.1}
                storage: {path: '%s', minFree: 0}
                upstreams:
                  - name: docker.io
                    url: %s
                """.formatted(port, dir.resolve("data"), hub.url()));
        try (RealParts.Child mirror = RealParts.mirror(dir, port, List.of("-Xms256m"), "--config", config.toString())) {
            RealParts.awaitUp("http://127.0.0.1:" + port + "/v2/", mirror);
            HttpClient client = vertx.createHttpClient(new HttpClientOptions().setDefaultHost("127.0.0.1")
                    .setDefaultPort(port), new PoolOptions().setHttp1MaxSize(TAGS));
            List<Future<String>> pulls = new ArrayList<>();
            for (int i = 0; i < TAGS; i++) {
                String tag = "t" + i;
                pulls.add(client.request(new RequestOptions().setMethod(HttpMethod.GET)
                                .setURI("/v2/huge/app/manifests/" + tag)
                                .putHeader("Accept", String.join(", ", MediaTypes.MANIFESTS)))
                        .compose(req -> req.send())
                        .compose(resp -> resp.body().map(body -> resp.statusCode() + " "
                                + (resp.statusCode() == 200 && Digest.of("sha256", body.getBytes()).equals(digests.get(tag))
                                ? "ok" : body.toString(StandardCharsets.UTF_8).substring(0, Math.min(200, body.length()))))));
            }
            List<String> answers = new ArrayList<>();
            for (Future<String> pull : pulls) {
                answers.add(await(pull.otherwise(err -> "failed: " + err)));
            }
            assertThat(answers).as("answers; the mirror's log:\n" + mirror.log().lines().filter(l -> !l.contains("fetching manifest")).limit(40).collect(java.util.stream.Collectors.joining("\n"))).allMatch(a -> a.equals("200 ok"));
            assertThat(mirror.process.isAlive()).isTrue();
            assertThat(mirror.log()).doesNotContain("OutOfMemoryError");
            String metrics = await(client.request(HttpMethod.GET, "/metrics").compose(req -> req.send())
                    .compose(resp -> resp.body())).toString();
            assertThat(Exposition.value(metrics, "registrymirror_body_memory_limit_bytes"))
                    .as("an eighth of the heap").isBetween(16.0 * (1 << 20), 32.0 * (1 << 20));
            assertThat(Exposition.value(metrics, "registrymirror_body_memory_bytes")).as("all given back").isZero();
            await(client.close());
        }
    }
}
