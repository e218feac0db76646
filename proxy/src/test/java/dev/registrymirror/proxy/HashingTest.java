package dev.registrymirror.proxy;

import dev.registrymirror.cache.ForwardingBlobStore;
import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/** Stored blobs are hashed on their first read after a start, off the pool that does lookups. */
class HashingTest extends MirrorTestBase {
    private static final int WORKERS = 8;

    @Override
    int workerPoolSize() {
        return WORKERS;
    }

    @Test
    void firstReadsAfterARestartDoNotHoldLookupsBack() throws Exception {
        List<byte[]> layers = new ArrayList<>();
        List<Digest> digests = new ArrayList<>();
        for (int i = 0; i < WORKERS; i++) {
            layers.add(randomBytes(100_000, i));
            digests.add(hub.putBlob(layers.get(i)));
        }
        hub.putImage("library/alpine", "3.19", randomBytes(1000, 99));
        startMirror();
        for (Digest d : digests) {
            get("/v2/library/alpine/blobs/" + d);
        }
        assertThat(get("/v2/library/alpine/manifests/3.19", "Accept", TYPES).statusCode()).isEqualTo(200);
        assertThat(downloadsLeft()).isZero();
        await(mirror.stop());

        // After the restart every blob is hashed on its first read; each hash here waits until released,
        // as the hash of a large layer takes a while.
        CountDownLatch release = new CountDownLatch(1);
        AtomicInteger hashing = new AtomicInteger();
        mirror = await(Mirror.start(vertx, config(), clock, real -> new ForwardingBlobStore(real) {
            @Override
            public boolean verify(Blob blob) throws java.io.IOException {
                hashing.incrementAndGet();
                try {
                    release.await();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                return real.verify(blob);
            }
        }));
        List<CompletableFuture<HttpResponse<byte[]>>> pulls = new ArrayList<>();
        for (Digest d : digests) {
            pulls.add(http.sendAsync(HttpRequest.newBuilder(URI.create(url("/v2/library/alpine/blobs/" + d)))
                    .timeout(Duration.ofSeconds(30)).build(), HttpResponse.BodyHandlers.ofByteArray()));
        }
        int busy = Math.min(WORKERS, Mirror.HASHING_THREADS);
        while (hashing.get() < busy) {
            Thread.onSpinWait(); // until every thread that may hash is held
        }
        // Lookups still have their workers: a manifest read from disk (tag, then manifest) is answered.
        // Before, the hashes held every worker thread, and this waited for them.
        HttpResponse<byte[]> manifest = send(HttpRequest.newBuilder(URI.create(url("/v2/library/alpine/manifests/3.19")))
                .timeout(Duration.ofSeconds(5)).header("Accept", TYPES).GET());
        assertThat(manifest.statusCode()).isEqualTo(200);
        release.countDown();
        for (int i = 0; i < WORKERS; i++) {
            assertThat(pulls.get(i).get().body()).isEqualTo(layers.get(i));
        }
    }
}
