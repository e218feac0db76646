package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import io.vertx.core.Promise;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The mirror as a real child process, stopped hard (SIGKILL) and softly (SIGTERM) in the middle
 * of downloads from a fake upstream that holds back the second half of every blob.
 */
class CrashIT extends FakeHubIT {
    @TempDir
    Path dir;
    final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();

    @Test
    void afterSigkillMidDownloadNoPartialBlobIsServedAndThePullsSucceed() throws Exception {
        byte[] done = MirrorTestBase.randomBytes(500_000, 1);
        Digest doneDigest = hub.putBlob(done);
        hub.putImage("library/app", "1", MirrorTestBase.randomBytes(1000, 2));
        List<byte[]> layers = new ArrayList<>();
        List<Digest> digests = new ArrayList<>();
        for (int i = 0; i < 4; i++) {
            layers.add(MirrorTestBase.randomBytes(2_000_000 + i, 10 + i));
            digests.add(hub.putBlob(layers.get(i)));
        }
        int port = RealParts.freePort();
        Path data = dir.resolve("data");
        try (RealParts.Child mirror = startMirror(port, data)) {
            assertThat(get(port, "/v2/library/app/blobs/" + doneDigest).body()).isEqualTo(done);
            assertThat(get(port, "/v2/library/app/manifests/1").statusCode()).isEqualTo(200);
            awaitTrue("the first blob committed", () -> Files.exists(blobFile(data, doneDigest)));

            hub.holdSecondHalf = Promise.promise();
            List<CompletableFuture<HttpResponse<byte[]>>> pulls = new ArrayList<>();
            for (Digest d : digests) {
                pulls.add(http.sendAsync(request(port, "/v2/library/app/blobs/" + d), HttpResponse.BodyHandlers.ofByteArray()));
            }
            awaitTrue("four downloads half written", () -> partialBytes(data.resolve("tmp")) >= 4 * 1_000_000L);

            mirror.process.destroyForcibly(); // SIGKILL: no shutdown hook runs
            assertThat(mirror.process.waitFor(10, TimeUnit.SECONDS)).isTrue();
            assertThat(mirror.process.exitValue()).isEqualTo(137);
            for (CompletableFuture<HttpResponse<byte[]>> pull : pulls) {
                assertThat(pull).failsWithin(Duration.ofSeconds(10)).withThrowableOfType(ExecutionException.class)
                        .withCauseInstanceOf(IOException.class);
            }
            for (Digest d : digests) {
                assertThat(blobFile(data, d)).doesNotExist();
            }
            assertThat(partialBytes(data.resolve("tmp"))).isGreaterThan(0); // the crash left them
        }

        hub.holdSecondHalf.complete();
        hub.holdSecondHalf = null;
        long upstreamBefore = hub.count("cdn", "GET", "/blobs/" + doneDigest);
        try (RealParts.Child mirror = startMirror(port, data)) {
            for (int i = 0; i < digests.size(); i++) {
                HttpResponse<byte[]> r = get(port, "/v2/library/app/blobs/" + digests.get(i));
                assertThat(r.statusCode()).isEqualTo(200);
                assertThat(r.body()).isEqualTo(layers.get(i));
            }
            HttpResponse<byte[]> kept = get(port, "/v2/library/app/blobs/" + doneDigest);
            assertThat(kept.body()).isEqualTo(done);
            assertThat(hub.count("cdn", "GET", "/blobs/" + doneDigest)).isEqualTo(upstreamBefore); // from disk
            assertThat(get(port, "/v2/library/app/manifests/1").statusCode()).isEqualTo(200);
            awaitTrue("leftovers removed", () -> staleTempDirs(data) == 0 && partialBytes(data.resolve("tmp")) == 0);
            assertThat(mirror.log()).contains("cache index ready")
                    .contains("the last run did not stop cleanly").contains("reconciled with the disk");
            assertTotalsMatchTheDisk(port, data);
            // The killed process's copy of SQLite's native library is gone; only this one's is there.
            try (Stream<Path> index = Files.list(data.resolve("index"))) {
                assertThat(index.map(p -> p.getFileName().toString()).filter(n -> n.endsWith("libsqlitejdbc.so")))
                        .hasSize(1);
            }
        }
        // A clean stop now: the next start takes the index as it is, with the same totals.
        try (RealParts.Child mirror = startMirror(port, data)) {
            awaitTrue("index ready", () -> mirror.log().contains("cache index ready"));
            assertThat(mirror.log()).contains("as the last run left it").doesNotContain("reconciling");
            assertTotalsMatchTheDisk(port, data);
            mirror.process.destroy();
            assertThat(mirror.process.waitFor(20, TimeUnit.SECONDS)).isTrue();
        }
        try (RealParts.Child mirror = startMirror(port, data)) {
            awaitTrue("index ready", () -> mirror.log().contains("cache index ready"));
            assertThat(mirror.log()).contains("as the last run left it");
            assertTotalsMatchTheDisk(port, data);
            assertThat(get(port, "/v2/library/app/blobs/" + doneDigest).body()).isEqualTo(done);
        }
    }

    @Test
    void sigkillInTheMiddleOfCommitsLosesNothingAndServesNothingWrong() throws Exception {
        // Many small blobs committed as fast as they come, the process killed while they are.
        int n = 300;
        List<byte[]> blobs = new ArrayList<>();
        List<Digest> digests = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            blobs.add(MirrorTestBase.randomBytes(1000 + i, 100 + i));
            digests.add(hub.putBlob(blobs.get(i)));
        }
        int port = RealParts.freePort();
        Path data = dir.resolve("data");
        try (RealParts.Child mirror = startMirror(port, data)) {
            List<CompletableFuture<HttpResponse<byte[]>>> pulls = new ArrayList<>();
            for (Digest d : digests) {
                pulls.add(http.sendAsync(request(port, "/v2/library/app/blobs/" + d), HttpResponse.BodyHandlers.ofByteArray()));
            }
            awaitTrue("some blobs committed", () -> storedBlobFiles(data) >= 20);
            mirror.process.destroyForcibly();
            assertThat(mirror.process.waitFor(10, TimeUnit.SECONDS)).isTrue();
            for (CompletableFuture<HttpResponse<byte[]>> pull : pulls) {
                pull.handle((r, e) -> null).get(10, TimeUnit.SECONDS);
            }
        }
        try (RealParts.Child mirror = startMirror(port, data)) {
            awaitTrue("index ready", () -> mirror.log().contains("cache index ready"));
            assertTotalsMatchTheDisk(port, data);
            long stored = storedBlobFiles(data);
            long before = hub.count("cdn", "GET", "/blobs/");
            for (int i = 0; i < n; i++) {
                HttpResponse<byte[]> r = get(port, "/v2/library/app/blobs/" + digests.get(i));
                assertThat(r.statusCode()).isEqualTo(200);
                assertThat(r.body()).as("blob %d", i).isEqualTo(blobs.get(i));
            }
            assertThat(hub.count("cdn", "GET", "/blobs/") - before).as("only what was not stored came from upstream")
                    .isEqualTo(n - stored);
            assertTotalsMatchTheDisk(port, data);
        }
    }

    /** The stored items and bytes the mirror reports are those of the blob files on disk. */
    private void assertTotalsMatchTheDisk(int port, Path data) throws Exception {
        String[] last = {""};
        // The disk is read again on each try: a download whose client has every byte may still be committing.
        awaitTrue("the stored totals match the disk", () -> {
            long[] files = {0, 0};
            try (Stream<Path> s = Files.walk(data.resolve("blobs"))) {
                s.filter(Files::isRegularFile).forEach(p -> {
                    files[0]++;
                    files[1] += p.toFile().length();
                });
            }
            String metrics = new String(get(port, "/metrics").body(), java.nio.charset.StandardCharsets.UTF_8);
            last[0] = files[0] + " files, " + files[1] + " bytes on disk; the mirror says "
                    + metrics.lines().filter(l -> l.startsWith("registrymirror_stored_")).toList();
            return metrics.contains("registrymirror_stored_items{kind=\"blob\"} " + (double) files[0])
                    && metrics.contains("registrymirror_stored_bytes{kind=\"blob\"} " + (double) files[1]);
        }, () -> last[0]);
    }

    private static long storedBlobFiles(Path data) throws IOException {
        if (!Files.isDirectory(data.resolve("blobs"))) {
            return 0;
        }
        try (Stream<Path> s = Files.walk(data.resolve("blobs"))) {
            return s.filter(Files::isRegularFile).count();
        }
    }

    @Test
    void sigtermLetsADownloadInProgressFinishAndLeavesNoTemporaryFiles() throws Exception {
        byte[] layer = MirrorTestBase.randomBytes(3_000_000, 20);
        Digest d = hub.putBlob(layer);
        int port = RealParts.freePort();
        Path data = dir.resolve("data");
        try (RealParts.Child mirror = startMirror(port, data)) {
            hub.holdSecondHalf = Promise.promise();
            CompletableFuture<HttpResponse<byte[]>> pull = http.sendAsync(request(port, "/v2/library/app/blobs/" + d),
                    HttpResponse.BodyHandlers.ofByteArray());
            awaitTrue("download half written", () -> partialBytes(data.resolve("tmp")) >= 1_000_000L);

            mirror.process.destroy(); // SIGTERM
            awaitTrue("mirror draining", () -> mirror.log().contains("waiting up to"));
            hub.holdSecondHalf.complete();
            HttpResponse<byte[]> r = pull.get(20, TimeUnit.SECONDS);
            assertThat(r.statusCode()).isEqualTo(200);
            assertThat(r.body()).isEqualTo(layer);
            assertThat(mirror.process.waitFor(20, TimeUnit.SECONDS)).isTrue();
            assertThat(mirror.log()).contains("stopped");
            assertThat(blobFile(data, d)).exists();
            assertThat(partialBytes(data.resolve("tmp"))).isZero();
            try (Stream<Path> tmp = Files.list(data.resolve("tmp"))) {
                assertThat(tmp).isEmpty();
            }
        }
    }

    private RealParts.Child startMirror(int port, Path data) throws Exception {
        RealParts.Child child = RealParts.mirror(dir, port, "--storage", data.toString(), "--upstream", hub.url());
        RealParts.awaitUp("http://127.0.0.1:" + port + "/v2/", child);
        return child;
    }

    private static HttpRequest request(int port, String path) {
        return HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + path)).timeout(Duration.ofSeconds(30))
                .build();
    }

    private HttpResponse<byte[]> get(int port, String path) throws IOException, InterruptedException {
        return http.send(request(port, path), HttpResponse.BodyHandlers.ofByteArray());
    }

    private static Path blobFile(Path data, Digest d) {
        return data.resolve("blobs").resolve(d.algorithm()).resolve(d.hex().substring(0, 2)).resolve(d.hex());
    }

    private static long partialBytes(Path tmp) throws IOException {
        if (!Files.isDirectory(tmp)) {
            return 0;
        }
        try (Stream<Path> s = Files.list(tmp)) {
            return s.mapToLong(p -> p.toFile().length()).sum();
        }
    }

    private static long staleTempDirs(Path data) throws IOException {
        try (Stream<Path> s = Files.list(data)) {
            return s.filter(p -> p.getFileName().toString().startsWith("tmp-stale-")).count();
        }
    }

    interface Check {
        boolean test() throws Exception;
    }

    /** Polls a condition of another process (its files, its log) until it holds, for at most 20 s. */
    private static void awaitTrue(String what, Check check) throws Exception {
        awaitTrue(what, check, () -> "");
    }

    /** Like {@link #awaitTrue(String, Check)}, the failure saying what {@code state} last said. */
    private static void awaitTrue(String what, Check check, java.util.function.Supplier<String> state) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (!check.test()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("not reached in 20 s: " + what + (state.get().isEmpty() ? "" : ": " + state.get()));
            }
            Thread.sleep(20); // polling another process, not waiting for time to pass
        }
    }
}
