package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/** A stopping mirror refuses new requests, lets responses in progress finish (bounded), leaves no temp files. */
class ShutdownTest extends MirrorTestBase {
    {
        retries = 0;
    }

    @Override
    String shutdownTimeout() {
        return "1s";
    }

    @Test
    void aResponseInProgressFinishesWhileNewRequestsAreRefused() throws Exception {
        byte[] layer = randomBytes(1_000_000, 1);
        Digest d = hub.putBlob(layer);
        hub.holdSecondHalf = Promise.promise();
        startMirror();
        CompletableFuture<HttpResponse<byte[]>> inProgress = http.sendAsync(
                HttpRequest.newBuilder(URI.create(url("/v2/library/alpine/blobs/" + d))).GET().build(),
                HttpResponse.BodyHandlers.ofByteArray());
        await(hub.firstHalfSent.future());

        Future<Void> stopping = mirror.stop();
        HttpResponse<byte[]> refused = get("/v2/library/alpine/blobs/" + d);
        assertThat(refused.statusCode()).isEqualTo(503);
        assertThat(body(refused)).contains("\"code\":\"UNAVAILABLE\"").contains("shutting down");
        assertThat(stopping.isComplete()).isFalse();

        hub.holdSecondHalf.complete();
        HttpResponse<byte[]> finished = inProgress.get(20, TimeUnit.SECONDS);
        assertThat(finished.statusCode()).isEqualTo(200);
        assertThat(finished.body()).isEqualTo(layer);
        await(stopping);
        mirror = null;
        assertThat(filesIn(storage.resolve("tmp"))).isZero();
    }

    @Test
    void aResponseThatDoesNotFinishIsCutAtTheShutdownTimeout() throws Exception {
        idleTimeout = "60s";
        Digest d = hub.putBlob(randomBytes(1_000_000, 2));
        hub.fault = FakeHub.Fault.STALL_MID_BODY;
        startMirror();
        CompletableFuture<HttpResponse<byte[]>> stuck = http.sendAsync(
                HttpRequest.newBuilder(URI.create(url("/v2/library/alpine/blobs/" + d))).GET().build(),
                HttpResponse.BodyHandlers.ofByteArray());
        long deadline = System.nanoTime() + 10_000_000_000L;
        while (filesIn(storage.resolve("tmp")) == 0 && System.nanoTime() < deadline) {
            Thread.onSpinWait(); // until the download has begun writing
        }
        assertThat(filesIn(storage.resolve("tmp"))).isEqualTo(1);

        long start = System.nanoTime();
        await(mirror.stop());
        mirror = null;
        Duration took = Duration.ofNanos(System.nanoTime() - start);
        assertThat(took).isGreaterThanOrEqualTo(Duration.ofMillis(900)).isLessThan(Duration.ofSeconds(10));
        assertThat(filesIn(storage.resolve("tmp"))).isZero();
        try {
            HttpResponse<byte[]> r = stuck.get(10, TimeUnit.SECONDS);
            assertThat(r.statusCode()).as("never a clean 200 of a partial blob").isNotEqualTo(200);
        } catch (ExecutionException broken) {
            // the connection was closed mid-body: what the client must see
        }
    }

    private static long filesIn(Path dir) throws java.io.IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.count();
        }
    }
}
