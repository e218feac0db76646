package dev.registrymirror.proxy;

import dev.registrymirror.cache.ForwardingBlobStore;
import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.PooledByteBufAllocator;
import io.vertx.core.Promise;
import java.io.IOException;
import java.io.OutputStream;
import java.net.Socket;
import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.UnaryOperator;
import org.junit.jupiter.api.Test;

/**
 * The edges of a blob download: bodies without a length, clients that leave before the upstream
 * answers, ranges of a blob still arriving, and the memory all of it takes.
 */
class DownloadEdgeTest extends MirrorTestBase {
    private String storageYaml = "";

    @Override
    String storageYaml() {
        return storageYaml;
    }

    // ---------------------------------------------------------------- item 5

    @Test
    void aBlobWithoutContentLengthStopsAtStorageMaxBlobSize() throws IOException {
        storageYaml = ", maxBlobSize: 8MiB";
        Digest d = hub.putBlob(randomBytes(1000, 1));
        hub.endlessBlobBytes = 512L << 20; // chunked, no length announced
        startMirror();
        assertBrokenOrError("/v2/library/alpine/blobs/" + d);
        // Before, a chunked answer had no limit at all: it was written to tmp/ until the disk filled.
        assertThat(hub.streamedBytes.get()).isLessThan(64L << 20);
        assertThat(downloadsLeft()).isZero();
        assertThat(storedBlobs()).isEmpty();
        assertThat(tempFiles()).isEmpty();
        assertThat(mirror.metrics().scrape())
                .contains("registrymirror_upstream_errors_total{reason=\"protocol\",upstream=\"docker.io\"} 1.0");
    }

    @Test
    void aBlobWithoutContentLengthStopsBeforeItTakesTheDiskUnderMinFree() throws IOException {
        Digest d = hub.putBlob(randomBytes(1000, 2));
        hub.endlessBlobBytes = 512L << 20;
        // The disk has 100 MiB free: with 64 MiB of headroom, an unknown-size blob may take 36 MiB.
        mirror = await(Mirror.start(vertx, config(), clock, real -> new ForwardingBlobStore(real) {
            @Override
            public long usableSpace() {
                return 100L << 20;
            }
        }));
        assertBrokenOrError("/v2/library/alpine/blobs/" + d);
        // The download stopped reading where the blob would have taken the disk under minFree. (A client
        // that had not been sent anything yet is then answered by the upstream on its own, unstored.)
        assertThat(hub.streams.get(0).get()).isLessThan(80L << 20);
        assertThat(downloadsLeft()).isZero();
        assertThat(storedBlobs()).isEmpty();
        assertThat(tempFiles()).isEmpty();
        assertThat(mirror.metrics().scrape()).contains("registrymirror_storage_errors_total{reason=\"disk_full\"} 1.0");
    }

    @Test
    void aBlobAnnouncedLargerThanMaxBlobSizeIsRefusedBeforeItsBody() {
        storageYaml = ", maxBlobSize: 1MiB";
        byte[] layer = randomBytes(2 << 20, 3);
        Digest d = hub.putBlob(layer);
        startMirror();
        HttpResponse<byte[]> r = get("/v2/library/alpine/blobs/" + d);
        assertThat(r.statusCode()).isEqualTo(502);
        assertThat(body(r)).contains("storage.maxBlobSize");
        assertThat(downloadsLeft()).isZero();
    }

    // ---------------------------------------------------------------- item 14

    @Test
    void aClientThatLeavesWhileTheUpstreamConnectsIsSentNothing() throws Exception {
        byte[] layer = randomBytes(3 << 20, 4);
        Digest d = hub.putBlob(layer);
        Promise<Void> answer = Promise.promise();
        hub.holdBlobAnswers = answer;
        startMirror();
        requestAndLeave("/v2/library/alpine/blobs/" + d);
        answer.complete();
        assertThat(downloadsLeft()).isZero();
        assertThat(storedBlobs()).hasSize(1); // the download itself goes on: the next pull is a hit
        // Before, the blob was still pumped, all of it, into the closed connection.
        assertThat(Exposition.value(mirror.metrics().scrape(), "registrymirror_served_bytes_total{source=\"upstream\"}"))
                .isZero();
    }

    @Test
    void withTheDiskFullAClientThatLeftStartsNoStreamFromTheUpstream() throws Exception {
        Digest d = hub.putBlob(randomBytes(100_000, 5));
        Promise<Void> answer = Promise.promise();
        hub.holdBlobAnswers = answer;
        startMirrorWithNoRoomForDownloads();
        requestAndLeave("/v2/library/alpine/blobs/" + d);
        answer.complete();
        assertThat(downloadsLeft()).isZero();
        // The download failed for the disk; the client it was for had gone, so nobody is streamed to.
        // Before, a second upstream fetch started for nobody.
        assertThat(mirror.metrics().scrape()).contains("registrymirror_blob_passthrough_total 0.0");
        assertThat(hub.count("cdn", "GET", "/blobs/" + d)).isEqualTo(1);
    }

    /** A mirror whose disk refuses every temporary file: each miss is streamed without storing. */
    private void startMirrorWithNoRoomForDownloads() {
        mirror = await(Mirror.start(vertx, config(), clock, real -> new ForwardingBlobStore(real) {
            @Override
            public Path newTempFile() throws IOException {
                throw new IOException("No space left on device");
            }
        }));
    }

    /** Sends a GET on a raw socket, waits until the mirror has started its download, and closes. */
    private void requestAndLeave(String path) throws Exception {
        try (Socket s = new Socket("127.0.0.1", mirror.port())) {
            OutputStream out = s.getOutputStream();
            out.write(("GET " + path + " HTTP/1.1\r\nHost: mirror\r\n\r\n").getBytes(StandardCharsets.US_ASCII));
            out.flush();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (hub.count("cdn", "GET", "/blobs/") == 0 && System.nanoTime() < deadline) {
                Thread.onSpinWait(); // until the upstream has been asked (and holds its answer)
            }
            assertThat(hub.count("cdn", "GET", "/blobs/")).isEqualTo(1);
        }
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (mirror.activeRequests() > 0 && System.nanoTime() < deadline) {
            Thread.onSpinWait(); // until the mirror has seen the connection close
        }
        assertThat(mirror.activeRequests()).isZero();
    }

    // ---------------------------------------------------------------- item 15

    @Test
    void smallRangesOfABlobStillDownloadingAreAnsweredAtOnceFromItOrTheUpstream() throws Exception {
        byte[] layer = randomBytes(24 << 20, 6);
        Digest d = hub.putBlob(layer);
        Promise<Void> rest = holdSecondHalves();
        startMirror();
        CompletableFuture<HttpResponse<byte[]>> whole = pullUntilHalfSent(d);

        // The start of the layer has arrived: answered from the download. It used to wait for all 24 MiB.
        HttpResponse<byte[]> start = rangeWithin5s(d, 0, 1023);
        assertThat(start.statusCode()).isEqualTo(206);
        assertThat(start.headers().firstValue("Content-Range")).hasValue("bytes 0-1023/" + layer.length);
        assertThat(start.body()).isEqualTo(Arrays.copyOfRange(layer, 0, 1024));

        // The end of the layer (where stargz keeps its table of contents) is far ahead: asked of the upstream.
        int from = layer.length - 4096;
        HttpResponse<byte[]> end = rangeWithin5s(d, from, layer.length - 1);
        assertThat(end.statusCode()).isEqualTo(206);
        assertThat(end.body()).isEqualTo(Arrays.copyOfRange(layer, from, layer.length));
        assertThat(hub.count("cdn", "GET", "/blobs/" + d)).isEqualTo(2); // the download, and that range
        assertThat(mirror.metrics().scrape()).contains("registrymirror_blob_ranges_from_upstream_total 1.0");
        assertThat(whole.isDone()).as("the download still waits for the upstream's second half").isFalse();

        rest.complete();
        assertThat(whole.get(30, TimeUnit.SECONDS).body()).isEqualTo(layer);
        assertThat(storedBlobs()).hasSize(1);
    }

    /** The fake's blobs stop halfway until the returned promise completes (the upstream is slow, not silent). */
    private Promise<Void> holdSecondHalves() {
        Promise<Void> rest = Promise.promise();
        hub.holdSecondHalf = rest;
        idleTimeout = "30s";
        return rest;
    }

    /** Starts a pull of the whole blob and waits until the upstream has sent its first half. */
    private CompletableFuture<HttpResponse<byte[]>> pullUntilHalfSent(Digest d) {
        CompletableFuture<HttpResponse<byte[]>> whole = http.sendAsync(HttpRequest.newBuilder(
                URI.create(url("/v2/library/alpine/blobs/" + d))).build(), HttpResponse.BodyHandlers.ofByteArray());
        await(hub.firstHalfSent.future());
        return whole;
    }

    private HttpResponse<byte[]> rangeWithin5s(Digest d, long first, long last) throws Exception {
        return http.sendAsync(HttpRequest.newBuilder(URI.create(url("/v2/library/alpine/blobs/" + d)))
                        .header("Range", "bytes=" + first + "-" + last).build(), HttpResponse.BodyHandlers.ofByteArray())
                .get(5, TimeUnit.SECONDS);
    }

    // ---------------------------------------------------------------- item 17

    @Test
    void readersOfTheTemporaryFileUseTheTransfersAllocatorAndItsBudget() throws Exception {
        byte[] layer = randomBytes(24 << 20, 7);
        int half = layer.length / 2;
        Digest d = hub.putBlob(layer);
        Promise<Void> rest = holdSecondHalves();
        Counting allocator = new Counting();
        mirror = await(Mirror.start(vertx, config(), clock, UnaryOperator.identity(), allocator));
        CompletableFuture<HttpResponse<byte[]>> first = pullUntilHalfSent(d);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (allocator.bytes.get() < half - (256 << 10) && System.nanoTime() < deadline) {
            Thread.onSpinWait(); // until the download has taken in its first half
        }
        long downloaded = allocator.bytes.get();
        // A late client starts before the window: its first 8 MiB come from the temporary file.
        HttpResponse<java.io.InputStream> late = http.send(HttpRequest.newBuilder(
                URI.create(url("/v2/library/alpine/blobs/" + d))).build(), HttpResponse.BodyHandlers.ofInputStream());
        byte[] start = late.body().readNBytes(8 << 20);
        assertThat(start).isEqualTo(Arrays.copyOfRange(layer, 0, 8 << 20));
        // Those reads came from the same allocator as the download's chunks (they used Netty's default).
        assertThat(allocator.bytes.get() - downloaded).isGreaterThanOrEqualTo(4L << 20);
        rest.complete();
        byte[] remainder = late.body().readAllBytes();
        assertThat(remainder).isEqualTo(Arrays.copyOfRange(layer, 8 << 20, layer.length));
        assertThat(first.get(30, TimeUnit.SECONDS).body()).isEqualTo(layer);
        assertThat(downloadsLeft()).isZero();
        assertThat(Exposition.value(mirror.metrics().scrape(), "registrymirror_download_memory_bytes")).isZero();
    }

    @Test
    void aStreamWithoutStoringIsCountedInTheBudgetWhileItRuns() throws Exception {
        byte[] layer = randomBytes(8 << 20, 8);
        Digest d = hub.putBlob(layer);
        Promise<Void> rest = Promise.promise();
        hub.holdSecondHalf = rest;
        idleTimeout = "30s";
        startMirrorWithNoRoomForDownloads();
        CompletableFuture<HttpResponse<byte[]>> client = http.sendAsync(HttpRequest.newBuilder(
                URI.create(url("/v2/library/alpine/blobs/" + d))).build(), HttpResponse.BodyHandlers.ofByteArray());
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (hub.count("cdn", "GET", "/blobs/") < 2 && System.nanoTime() < deadline) {
            Thread.onSpinWait(); // the failed download, then the stream to the client
        }
        await(hub.firstHalfSent.future());
        double held = 0;
        while (held == 0 && System.nanoTime() < deadline) {
            held = Exposition.value(mirror.metrics().scrape(), "registrymirror_download_memory_bytes");
        }
        // The chunk it holds back until the digest is checked is memory too (it was not counted).
        assertThat(held).isPositive();
        rest.complete();
        assertThat(client.get(30, TimeUnit.SECONDS).body()).isEqualTo(layer);
        double after = 1;
        while (after != 0 && System.nanoTime() < deadline) {
            after = Exposition.value(mirror.metrics().scrape(), "registrymirror_download_memory_bytes");
        }
        assertThat(after).isZero();
    }

    /** A pooled allocator that counts the bytes of the direct buffers it hands out. */
    static final class Counting extends PooledByteBufAllocator {
        final AtomicLong bytes = new AtomicLong();

        Counting() {
            super(true);
        }

        @Override
        public ByteBuf directBuffer(int initialCapacity, int maxCapacity) {
            bytes.addAndGet(initialCapacity);
            return super.directBuffer(initialCapacity, maxCapacity);
        }
    }
}
