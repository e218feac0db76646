package dev.registrymirror.proxy;

import dev.registrymirror.cache.ForwardingBlobStore;
import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.BlobStore;
import dev.registrymirror.cache.Digest;
import java.io.IOException;
import java.net.http.HttpResponse;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/**
 * A blob the cache certainly does not have goes to the upstream without a lookup in the index (a
 * worker's hop before every cold pull's first byte); one it has, stored in this run or an earlier one,
 * is still looked up and served from the disk.
 */
class MissWithoutLookupTest extends MirrorTestBase {
    final AtomicInteger lookups = new AtomicInteger();
    volatile BlobStore store;

    final class CountingStore extends ForwardingBlobStore {
        CountingStore(BlobStore real) {
            super(real);
            store = this;
        }

        @Override
        public Optional<Blob> acquire(Digest digest) throws IOException {
            lookups.incrementAndGet();
            return real.acquire(digest);
        }

        @Override
        public Optional<Blob> find(Digest digest) throws IOException {
            lookups.incrementAndGet();
            return real.find(digest);
        }
    }

    void startCounting() throws Exception {
        mirror = await(Mirror.start(vertx, config(), clock, CountingStore::new));
        // The index is read in the background after a start; until then every blob is a maybe.
        Digest never = Digest.of("sha256", new byte[] {1, 2, 3});
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (store.mayHold(never)) {
            assertThat(System.nanoTime()).as("the index was read").isLessThan(deadline);
            Thread.sleep(10); // polling the storage's own thread
        }
    }

    @Test
    void aMissAsksNoLookupAndAHitStillDoesAcrossARestart() throws Exception {
        byte[] layer = randomBytes(300_000, 5);
        Digest d = hub.putBlob(layer);
        startCounting();

        HttpResponse<byte[]> cold = get("/v2/library/alpine/blobs/" + d);
        assertThat(cold.statusCode()).isEqualTo(200);
        assertThat(cold.body()).isEqualTo(layer);
        assertThat(lookups.get()).as("lookups for a blob never stored").isZero();
        assertThat(hub.count("cdn", "GET", "/blobs/" + d)).isEqualTo(1);
        // The client has it once it is verified; the commit may still be under way (a request meanwhile
        // joins the download without a lookup).
        awaitTrue("the download is committed", () -> mirror.downloadsInFlight() == 0);

        HttpResponse<byte[]> warm = get("/v2/library/alpine/blobs/" + d);
        assertThat(warm.body()).isEqualTo(layer);
        assertThat(lookups.get()).isEqualTo(1);

        await(mirror.stop());
        mirror = null;
        lookups.set(0);
        startCounting();
        HttpResponse<byte[]> again = get("/v2/library/alpine/blobs/" + d);
        assertThat(again.statusCode()).isEqualTo(200);
        assertThat(again.body()).isEqualTo(layer);
        assertThat(lookups.get()).isEqualTo(1);
        assertThat(hub.count("cdn", "GET", "/blobs/" + d)).as("served from the disk after the restart").isEqualTo(1);
    }
}
