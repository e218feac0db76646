package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.PooledByteBufAllocator;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.UnaryOperator;
import java.util.stream.IntStream;
import org.junit.jupiter.api.Test;

/**
 * The memory of blob downloads: {@code server.downloadMemory} bounds what all of them hold (chunks
 * kept for readers and chunks not yet on disk); over it a download waits for its writes before
 * reading its upstream on. A chunk that finds no memory at all ends its download cleanly.
 */
class DownloadMemoryTest extends MirrorTestBase {
    private static final int CHUNK = 256 << 10; // the upstream client's largest body chunk
    private String serverYaml = "";

    @Override
    String serverYaml() {
        return serverYaml;
    }

    @Test
    void withNoDownloadMemoryEachChunkWaitsForItsWriteAndEveryClientGetsTheBlob() throws IOException {
        serverYaml = ", downloadMemory: 0";
        byte[] layer = randomBytes(24 << 20, 7);
        Digest d = hub.putBlob(layer);
        startMirror();
        List<CompletableFuture<HttpResponse<byte[]>>> clients = IntStream.range(0, 3).mapToObj(i -> http.sendAsync(
                HttpRequest.newBuilder(URI.create(url("/v2/library/alpine/blobs/" + d))).timeout(Duration.ofSeconds(20))
                        .build(), HttpResponse.BodyHandlers.ofByteArray())).toList();
        for (CompletableFuture<HttpResponse<byte[]>> c : clients) {
            HttpResponse<byte[]> r = c.join();
            assertThat(r.statusCode()).isEqualTo(200);
            assertThat(r.body()).isEqualTo(layer);
        }
        assertThat(hub.count("cdn", "GET", "/blobs/")).isEqualTo(1);
        assertThat(storedBlobs()).singleElement().satisfies(p -> assertThat(Files.readAllBytes(p)).isEqualTo(layer));
        assertThat(tempFiles()).isEmpty();
        String metrics = mirror.metrics().scrape();
        assertThat(metrics).contains("registrymirror_download_memory_limit_bytes 0.0");
        // Each chunk (at most 256 KiB) waited for its own write before the next was read: the transfers
        // held the chunk being written, the piece it came from, and three chunks per reader (what its
        // socket may queue, 512 KiB, and the piece in hand), never more: nothing grew with the 24 MiB
        // blob. (Before readers counted their sockets' queues in bytes: up to 16 pieces each, 11 MiB here.)
        // (A chunk whose write is back before the next arrives needs no pause, so pauses are not one a chunk.)
        assertThat(Exposition.value(metrics, "registrymirror_download_pauses_total{reason=\"memory\"}"))
                .isGreaterThan(0);
        assertThat(mirror.downloadMemoryPeak()).isLessThanOrEqualTo((2L + 3L * clients.size()) * CHUNK);
    }

    @Test
    void aChunkThatFindsNoMemoryEndsTheDownloadAndTheNextPullStoresTheRightBytes() throws IOException {
        byte[] layer = randomBytes(4 << 20, 8);
        Digest d = hub.putBlob(layer);
        RunsOut allocator = new RunsOut(3);
        mirror = await(Mirror.start(vertx, config(), clock, UnaryOperator.identity(), allocator));

        assertBrokenOrError("/v2/library/alpine/blobs/" + d);
        assertThat(allocator.failed.get()).isEqualTo(1);
        assertThat(storedBlobs()).isEmpty();
        assertThat(tempFiles()).isEmpty();
        assertThat(mirror.downloadsInFlight()).isZero();

        HttpResponse<byte[]> again = get("/v2/library/alpine/blobs/" + d);
        assertThat(again.statusCode()).isEqualTo(200);
        assertThat(again.body()).isEqualTo(layer);
        assertThat(hub.count("cdn", "GET", "/blobs/")).isEqualTo(2);
        assertThat(storedBlobs()).singleElement().satisfies(p -> assertThat(Files.readAllBytes(p)).isEqualTo(layer));
    }

    /** A pooled allocator whose {@code n}-th chunk allocation fails as if direct memory were exhausted. */
    static final class RunsOut extends PooledByteBufAllocator {
        private final AtomicInteger left;
        final AtomicInteger failed = new AtomicInteger();

        RunsOut(int n) {
            super(true);
            left = new AtomicInteger(n);
        }

        @Override
        public ByteBuf directBuffer(int initialCapacity, int maxCapacity) {
            if (left.decrementAndGet() == 0) {
                failed.incrementAndGet();
                throw new OutOfMemoryError("no direct memory left (test)");
            }
            return super.directBuffer(initialCapacity, maxCapacity);
        }
    }
}
