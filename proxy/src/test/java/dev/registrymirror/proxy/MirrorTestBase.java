package dev.registrymirror.proxy;

import dev.registrymirror.proxy.manifest.MediaTypes;
import dev.registrymirror.proxy.vertx.Fatal;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ch.qos.logback.classic.Logger;
import ch.qos.logback.classic.spi.ILoggingEvent;
import ch.qos.logback.core.read.ListAppender;
import dev.registrymirror.cache.TestClock;
import dev.registrymirror.config.ConfigLoader;
import dev.registrymirror.config.MirrorConfig;
import io.vertx.core.Future;
import io.vertx.core.Vertx;
import io.vertx.core.VertxOptions;
import io.vertx.junit5.VertxExtension;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.util.List;
import java.util.stream.Stream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import org.slf4j.LoggerFactory;

/**
 * A mirror on loopback in front of a {@link FakeHub}, with an injected clock, and a plain JDK HTTP
 * client to talk to it as a registry client would.
 */
@ExtendWith(VertxExtension.class)
abstract class MirrorTestBase {
    static final String TYPES = String.join(", ", MediaTypes.MANIFESTS);
    /**
     * The mirror's event loops in tests: several, as in production, so that requests of one test meet
     * on different threads (a download started on one loop, its readers on others).
     */
    static final int EVENT_LOOPS = 4;

    Vertx vertx;
    FakeHub hub;
    Mirror mirror;
    final TestClock clock = new TestClock();
    final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();

    @TempDir
    Path storage;

    /** Timeouts and retries of the fake hub's upstream entry; tests change them before starting the mirror. */
    /** {@code storage.minFree}: none, unless a test is about it; the default would depend on this machine's disk. */
    String minFree = "0";
    /** {@code server.port}: any free one, unless a test needs to know it beforehand (a cluster's url). */
    int serverPort = 0;
    String connectTimeout = "2s";
    String idleTimeout = "2s";
    int retries = 1;

    /** Warnings of Vert.x's blocked-thread checker: any one fails the test. */
    private final ListAppender<ILoggingEvent> blocked = new ListAppender<>();
    /**
     * Netty's reports of pooled buffers collected unreleased (the tests run with leak detection at
     * "paranoid"): any one fails the test during which it is reported.
     */
    private final ListAppender<ILoggingEvent> leaks = new ListAppender<>();
    /** Every log event of the test (tests look for lines, or for secrets that must not be there). */
    final ListAppender<ILoggingEvent> logged = new ListAppender<>();
    /** Failures nothing handled on an event loop (the mirror logs them): any one fails the test. */
    private final ListAppender<ILoggingEvent> unhandled = new ListAppender<>();

    /**
     * Errors reported as fatal (which in production end the process): any one fails the test, unless
     * the test takes it from here.
     */
    final java.util.concurrent.BlockingQueue<String> fatal = new java.util.concurrent.LinkedBlockingQueue<>();

    @BeforeEach
    void startHub() {
        Fatal.setHandler((where, error) -> fatal.add(where + ": " + error));
        blocked.start();
        ((Logger) LoggerFactory.getLogger("io.vertx.core.internal.threadchecker.BlockedThreadChecker")).addAppender(blocked);
        leaks.start();
        ((Logger) LoggerFactory.getLogger("io.netty.util.ResourceLeakDetector")).addAppender(leaks);
        unhandled.start();
        ((Logger) LoggerFactory.getLogger(Mirror.class)).addAppender(unhandled);
        logged.start();
        ((Logger) LoggerFactory.getLogger(org.slf4j.Logger.ROOT_LOGGER_NAME)).addAppender(logged);
        // Any event-loop task running over 250 ms fails the test (see stopAll), with its stack in the log.
        // Lower limits flag cold-JVM class loading and GC pauses on a 2-core machine, not blocking calls.
        // More event loops than the mirror uses (EVENT_LOOPS), so that the fake hub's servers and the
        // mirror's do not all share one thread even on a one-core machine.
        vertx = Mirror.newVertx(new VertxOptions().setEventLoopPoolSize(EVENT_LOOPS + 2).setWorkerPoolSize(workerPoolSize())
                .setMaxEventLoopExecuteTime(250).setMaxEventLoopExecuteTimeUnit(
                TimeUnit.MILLISECONDS).setBlockedThreadCheckInterval(50).setWarningExceptionTime(250)
                .setWarningExceptionTimeUnit(TimeUnit.MILLISECONDS));
        hub = await(FakeHub.deploy(vertx, useTls()));
    }

    /** Vert.x's worker threads (its default: 20). */
    int workerPoolSize() {
        return 20;
    }

    /** How long {@link Mirror#stop} waits for responses in progress. */
    String shutdownTimeout() {
        return "2s";
    }

    boolean useTls() {
        return false;
    }

    @AfterEach
    void stopAll() {
        if (mirror != null) {
            await(mirror.stop());
        }
        for (Mirror m : others) {
            await(m.stop());
        }
        await(vertx.close());
        ((Logger) LoggerFactory.getLogger("io.vertx.core.internal.threadchecker.BlockedThreadChecker")).detachAppender(blocked);
        assertThat(blocked.list).extracting(ILoggingEvent::getFormattedMessage)
                .as("an event loop was blocked").isEmpty();
        ((Logger) LoggerFactory.getLogger("io.netty.util.ResourceLeakDetector")).detachAppender(leaks);
        assertThat(leaks.list).extracting(ILoggingEvent::getFormattedMessage)
                .as("a pooled buffer was never released").isEmpty();
        assertThat(fatal).as("an Error reached the fatal handler (the process would have ended)").isEmpty();
        ((Logger) LoggerFactory.getLogger(Mirror.class)).detachAppender(unhandled);
        ((Logger) LoggerFactory.getLogger(org.slf4j.Logger.ROOT_LOGGER_NAME)).detachAppender(logged);
        assertThat(unhandled.list).filteredOn(e -> e.getFormattedMessage().startsWith("unhandled failure"))
                .extracting(e -> e.getThrowableProxy() == null ? e.getFormattedMessage()
                        : e.getFormattedMessage() + ": " + e.getThrowableProxy().getClassName() + ": "
                        + e.getThrowableProxy().getMessage())
                .as("a failure on an event loop that nothing handled").isEmpty();
    }

    /** The YAML for the upstreams; the default puts the fake hub at docker.io. */
    String upstreamsYaml() {
        return """
                upstreams:
                  - name: docker.io
                    url: %s
                    manifestTtl: 5m
                    connectTimeout: %s
                    idleTimeout: %s
                    retries: %d
                    retryBackoff: 10ms
                %s""".formatted(hub.url(), connectTimeout, idleTimeout, retries, upstreamExtraYaml());
    }

    /** More lines for the upstream entry (credentials), indented by four spaces. */
    String upstreamExtraYaml() {
        return "";
    }

    /**
     * A {@code cluster:} section that makes the mirror a cluster of one (its own member), so that the
     * cluster's series exist; sets {@link #serverPort}, which the cluster's {@code url} names.
     */
    String clusterOfOne(String name) throws IOException {
        serverPort = RealParts.freePort();
        int memberPort = RealParts.freePort();
        return """
                cluster:
                  name: %s
                  secret: 'a-secret-of-at-least-thirty-two-characters'
                  bind: 127.0.0.1:%d
                  members: ['127.0.0.1:%d']
                  url: http://127.0.0.1:%d
                """.formatted(name, memberPort, memberPort, serverPort);
    }

    /** The folder of {@link #startHostedMirror}'s mirror. */
    @TempDir
    Path hostedStorage;

    /** Mirrors a test started besides {@link #mirror}; stopped after it. */
    final java.util.List<Mirror> others = new java.util.ArrayList<>();

    /**
     * A second mirror with hosted repositories ({@code team/**}, a 1 GiB quota) and no cluster, in a
     * folder of its own, for tests that need series of both kinds (a cluster refuses {@code hosted}).
     */
    Mirror startHostedMirror() {
        Path folder = hostedStorage;
        String yaml = "server: {port: 0, host: 127.0.0.1, eventLoops: " + EVENT_LOOPS + "}\n"
                + "storage: {path: '" + folder + "', minFree: 0}\n" + upstreamsYaml()
                + "\nhosted: {repositories: [\"team/**\"], maxSize: 1GiB}\n";
        Mirror m = await(Mirror.start(vertx, ConfigLoader.parse(yaml, Map.of(), ConfigLoader.Overrides.none()), clock));
        others.add(m);
        return m;
    }

    Mirror startMirror() {
        mirror = await(Mirror.start(vertx, config(), clock));
        return mirror;
    }

    /** The configuration {@link #startMirror} uses. */
    MirrorConfig config() {
        String yaml = "server: {port: " + serverPort + ", host: 127.0.0.1, eventLoops: " + EVENT_LOOPS + ", shutdownTimeout: "
                + shutdownTimeout() + serverYaml() + "}\n"
                + "storage: {path: '" + storage + "', minFree: " + minFree + storageYaml() + "}\n" + upstreamsYaml()
                + topLevelYaml();
        return ConfigLoader.parse(yaml, Map.of(), ConfigLoader.Overrides.none());
    }

    /** More keys for {@code server:}, each starting with a comma. */
    String serverYaml() {
        return "";
    }

    /** More top-level sections (a {@code prefetch:} list, say), each on lines of its own. */
    String topLevelYaml() {
        return "";
    }

    /** More keys for {@code storage:}, each starting with a comma. */
    String storageYaml() {
        return "";
    }

    Mirror restartMirror() {
        await(mirror.stop());
        mirror = null;
        return startMirror();
    }

    String url(String path) {
        return "http://127.0.0.1:" + mirror.port() + path;
    }

    HttpResponse<byte[]> get(String path, String... headers) {
        return send(HttpRequest.newBuilder(URI.create(url(path))).GET(), headers);
    }

    HttpResponse<byte[]> head(String path, String... headers) {
        return send(HttpRequest.newBuilder(URI.create(url(path))).method("HEAD", HttpRequest.BodyPublishers.noBody()),
                headers);
    }

    HttpResponse<byte[]> send(HttpRequest.Builder b, String... headers) {
        for (int i = 0; i < headers.length; i += 2) {
            b.header(headers[i], headers[i + 1]);
        }
        try {
            return http.send(b.timeout(Duration.ofSeconds(20)).build(), HttpResponse.BodyHandlers.ofByteArray());
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException(e);
        }
    }

    /** Sends a GET without waiting for its answer (for requests that must overlap). */
    java.util.concurrent.CompletableFuture<HttpResponse<byte[]>> getAsync(String path, String... headers) {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(url(path))).GET();
        for (int i = 0; i < headers.length; i += 2) {
            b.header(headers[i], headers[i + 1]);
        }
        return http.sendAsync(b.timeout(Duration.ofSeconds(20)).build(), HttpResponse.BodyHandlers.ofByteArray());
    }

    static <T> T join(java.util.concurrent.CompletableFuture<T> f) {
        try {
            return f.get(30, TimeUnit.SECONDS);
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    /** Polls the mirror's own work (never waiting for time to pass) until {@code condition} holds, for at most 20 s. */
    static void awaitTrue(String what, java.util.function.BooleanSupplier condition) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (!condition.getAsBoolean()) {
            assertThat(System.nanoTime()).as(what + " within 20 s").isLessThan(deadline);
            try {
                Thread.sleep(10);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new AssertionError("interrupted while waiting for " + what, e);
            }
        }
    }

    static <T> T await(Future<T> f) {
        try {
            return f.toCompletionStage().toCompletableFuture().get(30, TimeUnit.SECONDS);
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    static String body(HttpResponse<byte[]> r) {
        return new String(r.body(), java.nio.charset.StandardCharsets.UTF_8);
    }

    static byte[] randomBytes(int n, long seed) {
        byte[] b = new byte[n];
        new java.util.Random(seed).nextBytes(b);
        return b;
    }

    void assertBrokenOrError(String path) throws IOException {
        HttpRequest req = HttpRequest.newBuilder(URI.create(url(path))).timeout(java.time.Duration.ofSeconds(15)).GET().build();
        assertThatThrownBy(() -> {
            HttpResponse<InputStream> r = http.send(req, HttpResponse.BodyHandlers.ofInputStream());
            if (r.statusCode() != 200) {
                throw new IOException("status " + r.statusCode());
            }
            long declared = r.headers().firstValueAsLong("Content-Length").orElse(-1);
            try (InputStream in = r.body()) {
                long n = in.transferTo(java.io.OutputStream.nullOutputStream());
                throw new AssertionError("clean end after " + n + " of " + declared + " bytes");
            }
        }).isInstanceOf(IOException.class);
    }

    /**
     * Waits up to 5 s for the mirror's blob downloads to end, and returns how many are left. A client has
     * its bytes once they are verified; the commit to the store follows a moment later.
     */
    int downloadsLeft() {
        long deadline = System.nanoTime() + 5_000_000_000L;
        while (mirror != null && mirror.downloadsInFlight() > 0 && System.nanoTime() < deadline) {
            Thread.onSpinWait();
        }
        return mirror == null ? 0 : mirror.downloadsInFlight();
    }

    List<Path> storedBlobs() throws IOException {
        downloadsLeft();
        Path blobs = storage.resolve("blobs");
        try (Stream<Path> s = Files.walk(blobs)) {
            return s.filter(Files::isRegularFile).toList();
        } catch (UncheckedIOException e) {
            throw e.getCause();
        }
    }

    List<Path> tempFiles() throws IOException {
        // Temporary files are removed on a worker thread right after the download ends.
        long deadline = System.nanoTime() + 5_000_000_000L;
        List<Path> left;
        do {
            try (Stream<Path> s = Files.list(storage.resolve("tmp"))) {
                left = s.toList();
            }
        } while (!left.isEmpty() && System.nanoTime() < deadline);
        return left;
    }
}
