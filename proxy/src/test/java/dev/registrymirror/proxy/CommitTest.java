package dev.registrymirror.proxy;

import dev.registrymirror.cache.ForwardingBlobStore;
import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.BlobStore;
import dev.registrymirror.cache.Digest;
import io.vertx.core.Future;
import java.io.IOException;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * The moment between a download's last verified byte and its commit to the store, held open: a
 * client has its bytes once they are verified, so others may ask for the blob (or the mirror may
 * be stopped) before it is stored.
 */
class CommitTest extends MirrorTestBase {
    private final CountDownLatch committing = new CountDownLatch(1);
    private final CompletableFuture<Void> mayCommit = new CompletableFuture<>();

    @Override
    String shutdownTimeout() {
        return "1s";
    }

    /**
     * Starts the mirror with commits held, has a client fetch {@code layer} whole, and returns once the
     * blob's commit has begun (and waits).
     */
    private Digest fetchedAndCommitting(byte[] layer) throws InterruptedException {
        Digest d = hub.putBlob(layer);
        mirror = await(Mirror.start(vertx, config(), clock, HeldCommit::new));
        assertThat(get("/v2/library/alpine/blobs/" + d).body()).isEqualTo(layer);
        assertThat(committing.await(20, TimeUnit.SECONDS)).as("the commit began").isTrue();
        return d;
    }

    @Test
    void clientsArrivingWhileABlobIsCommittedAreServedFromTheDownloadAsHits() throws Exception {
        byte[] layer = randomBytes(300_000, 1);
        Digest d = fetchedAndCommitting(layer);

        HttpResponse<byte[]> again = get("/v2/library/alpine/blobs/" + d);
        assertThat(again.statusCode()).isEqualTo(200);
        assertThat(again.body()).isEqualTo(layer);
        HttpResponse<byte[]> range = get("/v2/library/alpine/blobs/" + d, "Range", "bytes=299990-");
        assertThat(range.statusCode()).isEqualTo(206);
        assertThat(range.body()).isEqualTo(java.util.Arrays.copyOfRange(layer, 299_990, 300_000));
        HttpResponse<byte[]> headed = head("/v2/library/alpine/blobs/" + d);
        assertThat(headed.statusCode()).isEqualTo(200);
        assertThat(headed.headers().firstValue("Content-Length")).contains("300000");
        assertThat(storedBlobsNow()).isEmpty(); // still committing
        assertThat(hub.count("cdn", "GET", "/blobs/")).isEqualTo(1);
        assertThat(hub.count("cdn", "HEAD", "/blobs/") + hub.count("registry", "HEAD", "/blobs/")).isZero();
        assertThat(mirror.metrics().scrape()).contains("registrymirror_cache_hits_total{kind=\"blob\"} 3.0")
                .contains("registrymirror_cache_misses_total{kind=\"blob\"} 1.0");

        mayCommit.complete(null);
        assertThat(storedBlobs()).singleElement().satisfies(p -> assertThat(Files.readAllBytes(p)).isEqualTo(layer));
    }

    @Test
    void aBlobBeingCommittedWhenTheMirrorStopsIsStored() throws Exception {
        byte[] layer = randomBytes(300_000, 2);
        fetchedAndCommitting(layer);

        Future<Void> stopping = mirror.stop();
        // The stop must wait for the commit. The commit goes on a little later: time enough for a stop
        // that did not wait to delete the temporary file, so that the commit would find it gone.
        vertx.setTimer(300, t -> mayCommit.complete(null));
        await(stopping);
        mirror = null;
        assertThat(storedBlobs()).singleElement().satisfies(p -> assertThat(Files.readAllBytes(p)).isEqualTo(layer));
        assertThat(tempFiles()).isEmpty();
    }

    /** Committed blob files, without waiting for downloads to end. */
    private java.util.List<Path> storedBlobsNow() throws IOException {
        try (java.util.stream.Stream<Path> s = Files.walk(storage.resolve("blobs"))) {
            return s.filter(Files::isRegularFile).toList();
        }
    }

    /** The real store, whose commits wait until the test lets them go on. */
    private final class HeldCommit extends ForwardingBlobStore {
        HeldCommit(BlobStore real) {
            super(real);
        }

        @Override
        public Blob commit(Path temp, Digest digest, long size, String origin) throws IOException {
            committing.countDown();
            mayCommit.orTimeout(20, TimeUnit.SECONDS).join();
            return real.commit(temp, digest, size, origin);
        }
    }
}
