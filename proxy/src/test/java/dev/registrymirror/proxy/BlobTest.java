package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.registrymirror.cache.Digest;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpClient;
import io.vertx.core.http.HttpClientOptions;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.RequestOptions;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

class BlobTest extends MirrorTestBase {
    /** The largest piece a reader sends at once. */
    private static final int CHUNK = 256 * 1024;


    @Test
    void missFetchesThroughTheRedirectWithoutAuthorizationThenHitsLocally() throws IOException {
        byte[] layer = randomBytes(300_000, 1);
        Digest d = hub.putBlob(layer);
        startMirror();

        HttpResponse<byte[]> first = get("/v2/library/alpine/blobs/" + d);
        assertThat(first.statusCode()).isEqualTo(200);
        assertThat(first.body()).isEqualTo(layer);
        assertThat(first.headers().firstValue("Docker-Content-Digest")).contains(d.toString());
        assertThat(first.headers().firstValue("Content-Length")).contains("300000");
        assertThat(hub.count("registry", "GET", "/blobs/")).isEqualTo(2); // 401 challenge, then with token
        assertThat(hub.count("auth")).isEqualTo(1);
        assertThat(hub.count("cdn", "GET", "/blobs/")).isEqualTo(1);
        assertThat(hub.seen("cdn").get(0).authorization()).isNull();
        // A client finishes once the blob is verified; it is stored a moment later.
        assertThat(storedBlobs()).hasSize(1);

        HttpResponse<byte[]> second = get("/v2/library/alpine/blobs/" + d);
        assertThat(second.statusCode()).isEqualTo(200);
        assertThat(second.body()).isEqualTo(layer);
        assertThat(hub.count("cdn", "GET", "/blobs/")).isEqualTo(1);
        assertThat(hub.count("registry", "GET", "/blobs/")).isEqualTo(2);
        assertThat(mirror.metrics().scrape()).contains("registrymirror_cache_hits_total{kind=\"blob\"} 1.0")
                .contains("registrymirror_cache_misses_total{kind=\"blob\"} 1.0");
    }

    @Test
    void hitsAnswerRangeAndHeadLocally() {
        byte[] layer = randomBytes(10_000, 2);
        Digest d = hub.putBlob(layer);
        startMirror();
        assertThat(get("/v2/library/alpine/blobs/" + d).statusCode()).isEqualTo(200);
        assertThat(downloadsLeft()).isZero(); // stored
        long before = hub.seen.size();

        HttpResponse<byte[]> range = get("/v2/library/alpine/blobs/" + d, "Range", "bytes=100-199");
        assertThat(range.statusCode()).isEqualTo(206);
        assertThat(range.headers().firstValue("Content-Range")).contains("bytes 100-199/10000");
        assertThat(range.body()).isEqualTo(java.util.Arrays.copyOfRange(layer, 100, 200));

        HttpResponse<byte[]> resume = get("/v2/library/alpine/blobs/" + d, "Range", "bytes=9000-");
        assertThat(resume.statusCode()).isEqualTo(206);
        assertThat(resume.body()).isEqualTo(java.util.Arrays.copyOfRange(layer, 9000, 10000));

        HttpResponse<byte[]> suffix = get("/v2/library/alpine/blobs/" + d, "Range", "bytes=-10");
        assertThat(suffix.body()).isEqualTo(java.util.Arrays.copyOfRange(layer, 9990, 10000));

        HttpResponse<byte[]> outside = get("/v2/library/alpine/blobs/" + d, "Range", "bytes=20000-");
        assertThat(outside.statusCode()).isEqualTo(416);
        assertThat(outside.headers().firstValue("Content-Range")).contains("bytes */10000");

        HttpResponse<byte[]> headed = head("/v2/library/alpine/blobs/" + d);
        assertThat(headed.statusCode()).isEqualTo(200);
        assertThat(headed.headers().firstValue("Content-Length")).contains("10000");
        assertThat(headed.body()).isEmpty();
        assertThat(hub.seen.size()).isEqualTo(before);
    }

    @Test
    void aRangeRequestOnAnUncachedBlobIsServedFromTheDownloadAsItArrives() {
        byte[] layer = randomBytes(500_000, 9);
        Digest d = hub.putBlob(layer);
        startMirror();
        HttpResponse<byte[]> r = get("/v2/library/alpine/blobs/" + d, "Range", "bytes=400000-");
        assertThat(r.statusCode()).isEqualTo(206);
        assertThat(r.headers().firstValue("Content-Range")).contains("bytes 400000-499999/500000");
        assertThat(r.body()).isEqualTo(java.util.Arrays.copyOfRange(layer, 400_000, 500_000));
        // the whole blob was fetched and stored, so the next request is a hit
        assertThat(get("/v2/library/alpine/blobs/" + d).body()).isEqualTo(layer);
        assertThat(hub.count("cdn", "GET", "/blobs/")).isEqualTo(1);
    }

    @Test
    void headOfAnUncachedBlobAsksUpstreamWithoutDownloading() {
        byte[] layer = randomBytes(5000, 3);
        Digest d = hub.putBlob(layer);
        startMirror();
        HttpResponse<byte[]> r = head("/v2/library/alpine/blobs/" + d);
        assertThat(r.statusCode()).isEqualTo(200);
        assertThat(r.headers().firstValue("Content-Length")).contains("5000");
        assertThat(hub.count("cdn", "GET", "/blobs/")).isZero();
        assertThat(hub.count("cdn", "HEAD", "/blobs/")).isEqualTo(1);
    }

    @Test
    void concurrentClientsShareOneUpstreamFetchAndReceiveBytesAsTheyArrive() throws Exception {
        int clients = 8;
        byte[] layer = randomBytes(4 << 20, 4);
        Digest d = hub.putBlob(layer);
        Promise<Void> release = startMirrorHoldingSecondHalves();

        HttpClient client = vertx.createHttpClient(new HttpClientOptions(), new io.vertx.core.http.PoolOptions().setHttp1MaxSize(clients));
        List<Future<Buffer>> bodies = new ArrayList<>();
        AtomicLong receivedBeforeRelease = new AtomicLong();
        for (int i = 0; i < clients; i++) {
            bodies.add(fetch(client, d, null, receivedBeforeRelease)); // read below before the release
        }
        await(hub.firstHalfSent.future());
        // Every client gets the first half while the upstream is still holding back the second.
        long halfEach = layer.length / 2 - CHUNK;
        long deadline = System.nanoTime() + 20_000_000_000L;
        while (receivedBeforeRelease.get() < clients * halfEach && System.nanoTime() < deadline) {
            Thread.onSpinWait();
        }
        assertThat(receivedBeforeRelease.get()).isGreaterThanOrEqualTo(clients * halfEach);
        release.complete();

        for (Future<Buffer> f : bodies) {
            assertThat(await(f).getBytes()).isEqualTo(layer);
        }
        assertThat(hub.count("cdn", "GET", "/blobs/")).isEqualTo(1);
        assertThat(hub.count("registry", "GET", "/blobs/")).isLessThanOrEqualTo(2);
        assertThat(downloadsLeft()).isZero();
        assertThat(tempFiles()).isEmpty();
        await(client.close());
    }

    @Test
    void clientsJoiningLateReadTheStartFromTheFileAndTheRestFromMemoryAsItArrives() throws Exception {
        // The upstream holds back the second half of 24 MiB. Once the first half is written, its start
        // has left the download's in-memory window (4 MiB) and is only in the temporary file.
        byte[] layer = randomBytes(24 << 20, 42);
        int half = layer.length / 2;
        Digest d = hub.putBlob(layer);
        Promise<Void> release = startMirrorHoldingSecondHalves();
        HttpClient client = vertx.createHttpClient(new HttpClientOptions(), new io.vertx.core.http.PoolOptions().setHttp1MaxSize(4));
        AtomicLong early = new AtomicLong();
        Future<Buffer> first = fetch(client, d, null, early);
        await(hub.firstHalfSent.future());
        long deadline = System.nanoTime() + 20_000_000_000L;
        while ((early.get() < half - CHUNK || tempBytes() < half)
                && System.nanoTime() < deadline) {
            Thread.onSpinWait();
        }

        AtomicLong late = new AtomicLong();
        Future<Buffer> whole = fetch(client, d, null, late);
        Future<Buffer> fromFile = fetch(client, d, "bytes=1000000-", new AtomicLong());
        Future<Buffer> inWindow = fetch(client, d, "bytes=" + (half - 1000) + "-" + (half + 999), new AtomicLong());
        while (late.get() < half - CHUNK && System.nanoTime() < deadline) {
            Thread.onSpinWait();
        }
        assertThat(late.get()).as("a late client gets what has arrived while the upstream holds back the rest")
                .isGreaterThanOrEqualTo(half - CHUNK);
        release.complete();

        assertThat(await(first).getBytes()).isEqualTo(layer);
        assertThat(await(whole).getBytes()).isEqualTo(layer);
        assertThat(await(fromFile).getBytes()).isEqualTo(java.util.Arrays.copyOfRange(layer, 1_000_000, layer.length));
        assertThat(await(inWindow).getBytes()).isEqualTo(java.util.Arrays.copyOfRange(layer, half - 1000, half + 1000));
        assertThat(hub.count("cdn", "GET", "/blobs/")).isEqualTo(1);
        await(client.close());
    }

    @Test
    void whileABlobIsDownloadedHeadAndARangeOutsideItAreAnsweredWithoutTheUpstream() {
        byte[] layer = randomBytes(4 << 20, 43);
        Digest d = hub.putBlob(layer);
        Promise<Void> release = startMirrorHoldingSecondHalves();
        HttpClient client = vertx.createHttpClient();
        AtomicLong received = new AtomicLong();
        Future<Buffer> first = fetch(client, d, null, received);
        await(hub.firstHalfSent.future());
        // The download is streaming once its first bytes reach the client (sent is not yet received).
        awaitTrue("the first client receives bytes", () -> received.get() > 0);

        HttpResponse<byte[]> headed = head("/v2/library/alpine/blobs/" + d);
        assertThat(headed.statusCode()).isEqualTo(200);
        assertThat(headed.headers().firstValue("Content-Length")).contains(Integer.toString(layer.length));
        assertThat(headed.headers().firstValue("Docker-Content-Digest")).contains(d.toString());
        HttpResponse<byte[]> outside = get("/v2/library/alpine/blobs/" + d, "Range", "bytes=" + layer.length + "-");
        assertThat(outside.statusCode()).isEqualTo(416);
        assertThat(outside.headers().firstValue("Content-Range")).contains("bytes */" + layer.length);
        assertThat(body(outside)).contains("\"errors\"");
        assertThat(hub.count("registry", "HEAD", "/blobs/") + hub.count("cdn", "HEAD", "/blobs/")).isZero();
        assertThat(first.isComplete()).isFalse();

        release.complete();
        assertThat(await(first).getBytes()).isEqualTo(layer);
        assertThat(hub.count("cdn", "GET", "/blobs/")).isEqualTo(1);
        assertThat(downloadsLeft()).isZero();
        await(client.close());
    }

    /** Starts the mirror, the hub holding back the second half of every blob until the promise completes. */
    private Promise<Void> startMirrorHoldingSecondHalves() {
        Promise<Void> release = Promise.promise();
        hub.holdSecondHalf = release;
        idleTimeout = "30s"; // the hold must not pass for a silent upstream, however slow this machine is
        startMirror();
        return release;
    }

    private Future<Buffer> fetch(HttpClient client, Digest d, String range, AtomicLong received) {
        Promise<Buffer> body = Promise.promise();
        RequestOptions options = new RequestOptions().setMethod(HttpMethod.GET).setHost("127.0.0.1")
                .setPort(mirror.port()).setURI("/v2/library/alpine/blobs/" + d);
        if (range != null) {
            options.putHeader("Range", range);
        }
        client.request(options).compose(req -> req.send()).onSuccess(resp -> {
            Buffer all = Buffer.buffer();
            resp.handler(chunk -> {
                all.appendBuffer(chunk);
                received.addAndGet(chunk.length());
            });
            resp.endHandler(v -> body.tryComplete(all));
            resp.exceptionHandler(body::tryFail);
        }).onFailure(body::tryFail);
        return body.future();
    }

    /** Bytes in the temporary files now. */
    private long tempBytes() throws IOException {
        try (java.util.stream.Stream<Path> files = Files.list(storage.resolve("tmp"))) {
            return files.mapToLong(p -> p.toFile().length()).sum();
        }
    }

    @Test
    void anEmptyBlobIsServedAndStoredEmpty() throws IOException {
        Digest d = hub.putBlob(new byte[0]);
        startMirror();
        HttpResponse<byte[]> first = get("/v2/library/alpine/blobs/" + d);
        assertThat(first.statusCode()).isEqualTo(200);
        assertThat(first.body()).isEmpty();
        assertThat(first.headers().firstValue("Content-Length")).contains("0");
        List<Path> stored = storedBlobs();
        assertThat(stored).hasSize(1);
        assertThat(Files.size(stored.get(0))).isZero();
        assertThat(get("/v2/library/alpine/blobs/" + d).body()).isEmpty();
        assertThat(hub.count("cdn", "GET", "/blobs/")).isEqualTo(1);
    }

    @Test
    void unknownBlobIs404AndUpstream500Is502() throws IOException {
        startMirror();
        Digest missing = Digest.of("sha256", new byte[] {1, 2, 3});
        HttpResponse<byte[]> r = get("/v2/library/alpine/blobs/" + missing);
        assertThat(r.statusCode()).isEqualTo(404);
        assertThat(body(r)).contains("\"code\":\"BLOB_UNKNOWN\"");

        Digest d = hub.putBlob(randomBytes(100, 8));
        hub.fault = FakeHub.Fault.STATUS_500;
        hub.faultWhen = s -> s.server().equals("cdn");
        HttpResponse<byte[]> bad = get("/v2/library/alpine/blobs/" + d);
        assertThat(bad.statusCode()).isEqualTo(502);
        assertThat(body(bad)).contains("\"code\":\"UNAVAILABLE\"").contains("docker.io");
        assertThat(storedBlobs()).isEmpty();
    }

    @Test
    void aStoredBlobDamagedWhileTheMirrorWasDownIsDroppedAndFetchedAgain() throws IOException {
        byte[] layer = randomBytes(300_000, 40);
        Digest d = hub.putBlob(layer);
        startMirror();
        assertThat(get("/v2/library/alpine/blobs/" + d).body()).isEqualTo(layer);
        await(mirror.stop());
        mirror = null;
        Path file = storedBlobs().get(0);
        byte[] damaged = layer.clone();
        damaged[1234] ^= 1;
        Files.write(file, damaged);

        startMirror();
        HttpResponse<byte[]> r = get("/v2/library/alpine/blobs/" + d);
        assertThat(r.statusCode()).isEqualTo(200);
        assertThat(r.body()).isEqualTo(layer);
        assertThat(hub.count("cdn", "GET", "/blobs/" + d)).isEqualTo(2);
        assertThat(storedBlobs()).containsExactly(file);
        assertThat(Files.readAllBytes(file)).isEqualTo(layer);
        assertThat(mirror.metrics().scrape()).contains("registrymirror_corrupt_dropped_total{kind=\"blob\"} 1.0");
    }

    @Test
    void clientsSlowerThanTheDownloadGetExactlyTheBlob() throws Exception {
        // Sixteen clients reading a cold 48 MiB blob through small windows: the server's write queue
        // fills and drains over and over while the download runs, which once made a reader send a
        // range twice.
        byte[] layer = randomBytes(48 << 20, 41);
        Digest d = hub.putBlob(layer);
        startMirror();
        java.util.concurrent.ExecutorService pool = java.util.concurrent.Executors.newFixedThreadPool(16);
        List<java.util.concurrent.Future<Digest>> clients = new ArrayList<>();
        for (int i = 0; i < 16; i++) {
            clients.add(pool.submit(() -> {
                try (java.net.Socket s = new java.net.Socket()) {
                    s.setReceiveBufferSize(4096);
                    s.connect(new java.net.InetSocketAddress("127.0.0.1", mirror.port()));
                    s.getOutputStream().write(("GET /v2/library/alpine/blobs/" + d + " HTTP/1.1\r\nHost: x\r\n\r\n")
                            .getBytes(java.nio.charset.StandardCharsets.US_ASCII));
                    InputStream in = new java.io.BufferedInputStream(s.getInputStream(), 4096);
                    StringBuilder head = new StringBuilder();
                    while (!head.toString().endsWith("\r\n\r\n")) {
                        head.append((char) in.read());
                    }
                    java.util.regex.Matcher m = java.util.regex.Pattern.compile("(?i)content-length: *(\\d+)")
                            .matcher(head);
                    assertThat(m.find()).as(head.toString()).isTrue();
                    long left = Long.parseLong(m.group(1));
                    java.security.MessageDigest md = java.security.MessageDigest.getInstance("SHA-256");
                    byte[] small = new byte[1500];
                    while (left > 0) {
                        int n = in.read(small, 0, (int) Math.min(small.length, left));
                        if (n < 0) {
                            throw new IOException(left + " bytes missing");
                        }
                        md.update(small, 0, n);
                        left -= n;
                    }
                    return Digest.parse("sha256:" + java.util.HexFormat.of().formatHex(md.digest()));
                }
            }));
        }
        try {
            for (java.util.concurrent.Future<Digest> c : clients) {
                assertThat(c.get(60, java.util.concurrent.TimeUnit.SECONDS)).isEqualTo(d);
            }
        } finally {
            pool.shutdownNow();
        }
        assertThat(hub.count("cdn", "GET", "/blobs/")).isEqualTo(1);
    }

    @Test
    void anErrorAfterARetryCarriesNoneOfTheBlobsHeaders() throws IOException {
        byte[] layer = randomBytes(5000, 77);
        Digest d = hub.putBlob(layer);
        startMirror();
        assertThat(get("/v2/library/alpine/blobs/" + d).body()).isEqualTo(layer);
        for (java.nio.file.Path p : storedBlobs()) {
            java.nio.file.Files.delete(p); // deleted by hand: the next read finds it gone and fetches again
        }
        await(hub.stopRegistry());
        HttpResponse<byte[]> r = get("/v2/library/alpine/blobs/" + d);
        assertThat(r.statusCode()).isEqualTo(503);
        assertThat(r.headers().firstValue("Content-Type")).hasValue("application/json");
        // Before, the blob's headers set for the first attempt stayed on the error: cacheable for a year.
        assertThat(r.headers().firstValue("Cache-Control")).isEmpty();
        assertThat(r.headers().firstValue("Accept-Ranges")).isEmpty();
        assertThat(r.headers().firstValue("Docker-Content-Digest")).isEmpty();
        assertThat(r.headers().firstValue("Docker-Distribution-API-Version")).hasValue("registry/2.0");
        assertThat(body(r)).contains("UNAVAILABLE");
    }
}
