package dev.registrymirror.proxy;

import dev.registrymirror.proxy.operator.Prefetcher;
import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import dev.registrymirror.proxy.manifest.MediaTypes;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/** {@code prefetch:} images are fetched through the cache before clients ask, at start-up and on schedule. */
class PrefetchTest extends MirrorTestBase {
    String prefetch = "";

    @Override
    String topLevelYaml() {
        return "\nprefetch:\n" + prefetch;
    }

    @Test
    void aPrefetchedImageCostsALaterPullNoUpstreamBlobRequest() throws Exception {
        byte[] layer = randomBytes(300_000, 1);
        Digest manifest = hub.putImage("library/alpine", "3.19", layer);
        prefetch = "  - {image: docker.io/alpine:3.19, every: 1h}\n";
        startMirror();
        awaitRuns("ok", 1);
        assertThat(hub.count("cdn", "GET", "/blobs/")).as("config and layer").isEqualTo(2);

        JsonObject m = new JsonObject(body(get("/v2/library/alpine/manifests/3.19",
                "Accept", MediaTypes.OCI_MANIFEST)));
        assertThat(get("/v2/library/alpine/manifests/3.19").headers().firstValue("Docker-Content-Digest"))
                .contains(manifest.toString());
        assertThat(get("/v2/library/alpine/blobs/" + m.getJsonObject("config").getString("digest")).statusCode())
                .isEqualTo(200);
        assertThat(get("/v2/library/alpine/blobs/" + Digest.of("sha256", layer)).body()).isEqualTo(layer);
        assertThat(hub.count("cdn", "GET", "/blobs/")).as("the client's pull asked the upstream for no blob")
                .isEqualTo(2);
    }

    @Test
    void aClientPullingDuringThePrefetchSharesItsDownload() throws Exception {
        byte[] layer = randomBytes(2_000_000, 6);
        hub.putImage("library/alpine", "3.20", layer);
        Digest layerDigest = Digest.of("sha256", layer);
        hub.holdSecondHalf = io.vertx.core.Promise.promise(); // every blob stops halfway until released
        prefetch = "  - {image: docker.io/alpine:3.20}\n";
        startMirror();
        awaitTrue("the prefetch's two blob downloads started", () -> hub.count("cdn", "GET", "/blobs/") == 2);
        double misses = blobMisses();
        java.util.concurrent.CompletableFuture<byte[]> client = java.util.concurrent.CompletableFuture.supplyAsync(
                () -> get("/v2/library/alpine/blobs/" + layerDigest).body());
        awaitTrue("the client joined the download under way", () -> blobMisses() == misses + 1);
        hub.holdSecondHalf.complete();
        assertThat(client.get(20, TimeUnit.SECONDS)).isEqualTo(layer);
        awaitRuns("ok", 1);
        assertThat(hub.count("cdn", "GET", "/blobs/" + layerDigest)).as("one upstream fetch for both").isEqualTo(1);
    }

    private double blobMisses() {
        return Exposition.value(mirror.metrics().scrape(), "registrymirror_cache_misses_total{kind=\"blob\"}");
    }


    @Test
    void everyResolvesTheTagAgainAndFetchesWhatChanged() throws Exception {
        hub.putImage("library/alpine", "3.19", randomBytes(10_000, 2));
        prefetch = "  - {image: docker.io/alpine:3.19, every: 1h}\n";
        startMirror();
        awaitRuns("ok", 1);
        byte[] newer = randomBytes(20_000, 3);
        hub.putImage("library/alpine", "3.19", newer); // the tag moves upstream
        clock.advance(Duration.ofMinutes(59));
        mirror.prefetcher().runDue();
        assertThat(runs("ok")).as("not due yet").isEqualTo(1);
        clock.advance(Duration.ofMinutes(1));
        mirror.prefetcher().runDue();
        awaitRuns("ok", 2);
        Digest newLayer = Digest.of("sha256", newer);
        assertThat(hub.count("cdn", "GET", "/blobs/" + newLayer)).isEqualTo(1);
        long before = hub.count("cdn", "GET", "/blobs/");
        assertThat(get("/v2/library/alpine/blobs/" + newLayer).body()).isEqualTo(newer);
        assertThat(hub.count("cdn", "GET", "/blobs/")).isEqualTo(before);
    }

    @Test
    void onlyThePlatformsAskedForAreFetchedFromAnIndex() throws Exception {
        Digest amd = hub.putImage("library/busybox", null, randomBytes(5000, 4));
        Digest arm = hub.putImage("library/busybox", null, randomBytes(6000, 5));
        byte[] index = new JsonObject().put("schemaVersion", 2).put("mediaType", MediaTypes.OCI_INDEX)
                .put("manifests", new JsonArray()
                        .add(entry(amd, "amd64", null))
                        .add(entry(arm, "arm64", "v8")))
                .encode().getBytes(StandardCharsets.UTF_8);
        hub.putManifest("library/busybox", "1", MediaTypes.OCI_INDEX, index);
        prefetch = "  - {image: docker.io/busybox:1, platforms: [linux/arm64/v8]}\n";
        startMirror();
        awaitRuns("ok", 1);
        assertThat(hub.count("registry", "GET", "/manifests/" + arm)).isEqualTo(1);
        assertThat(hub.count("registry", "GET", "/manifests/" + amd)).isZero();
        assertThat(hub.count("cdn", "GET", "/blobs/" + Digest.of("sha256", randomBytes(6000, 5)))).isEqualTo(1);
        assertThat(hub.count("cdn", "GET", "/blobs/" + Digest.of("sha256", randomBytes(5000, 4)))).isZero();
    }

    @Test
    void aFailedPrefetchIsLoggedAndCountedAndTheMirrorServesOn() throws Exception {
        prefetch = "  - {image: docker.io/library/missing:1}\n";
        startMirror();
        awaitRuns("failed", 1);
        assertThat(get("/v2/").statusCode()).isEqualTo(200);
    }

    @Test
    void platformsMatchOsAndArchitectureAndTheVariantWhenNamed() {
        JsonObject armV8 = new JsonObject().put("os", "linux").put("architecture", "arm64").put("variant", "v8");
        assertThat(Prefetcher.matches(armV8, List.of("linux/arm64"))).isTrue();
        assertThat(Prefetcher.matches(armV8, List.of("linux/arm64/v8"))).isTrue();
        assertThat(Prefetcher.matches(armV8, List.of("linux/arm64/v7", "linux/amd64"))).isFalse();
        assertThat(Prefetcher.matches(null, List.of("linux/amd64"))).isFalse();
    }

    private static JsonObject entry(Digest d, String arch, String variant) {
        JsonObject platform = new JsonObject().put("os", "linux").put("architecture", arch);
        if (variant != null) {
            platform.put("variant", variant);
        }
        return new JsonObject().put("mediaType", MediaTypes.OCI_MANIFEST).put("digest", d.toString())
                .put("size", 100).put("platform", platform);
    }

    private double runs(String result) {
        return Exposition.value(mirror.metrics().scrape(), "registrymirror_prefetch_runs_total{result=\"" + result + "\"}");
    }

    /** Waits for the runs, which the mirror makes in the background over loopback. */
    private void awaitRuns(String result, int n) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (runs(result) < n) {
            assertThat(System.nanoTime()).as("%d %s prefetch runs within 20 s", n, result).isLessThan(deadline);
            Thread.sleep(10); // polling the mirror's own work, not waiting for time to pass
        }
        assertThat(runs(result)).isEqualTo(n);
    }
}
