package dev.registrymirror.proxy;

import dev.registrymirror.proxy.manifest.MediaTypes;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.http.HttpClient;
import io.vertx.core.http.HttpClientOptions;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.PoolOptions;
import io.vertx.core.http.RequestOptions;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Several hundred connections for a minute against the real jar with {@code -Xmx256m} and a
 * {@code maxSize} small enough that eviction runs all along: cached blobs, uncached blobs (pairs of
 * clients asking for the same one at once), manifests by tag. Every answer is checked against its
 * digest. Afterwards: no errors, no leaked file descriptors, resident memory flat.
 */
class LoadIT extends FakeHubIT {
    static final int CONNECTIONS = Integer.getInteger("load.connections", 300);
    static final int SECONDS = Integer.getInteger("load.seconds", 60);
    static final int CACHED = 60;
    static final int UNCACHED = 3000;

    @TempDir
    Path dir;

    record Blob(Digest digest, int size) {
    }

    @Test
    void hundredsOfConnectionsForAMinuteWithoutErrorsLeaksOrGrowth() throws Exception {
        Random random = new Random(7);
        List<Blob> cached = new ArrayList<>();
        for (int i = 0; i < CACHED; i++) {
            byte[] b = MirrorTestBase.randomBytes(16_384 + random.nextInt(240_000), i);
            cached.add(new Blob(hub.putBlob(b), b.length));
        }
        List<Blob> uncached = new ArrayList<>();
        for (int i = 0; i < UNCACHED; i++) {
            byte[] b = MirrorTestBase.randomBytes(8_192 + random.nextInt(56_000), 100_000 + i);
            uncached.add(new Blob(hub.putBlob(b), b.length));
        }
        Digest manifest = hub.putImage("library/app", "1", MirrorTestBase.randomBytes(2000, 3));
        hub.rateRemaining.set(Integer.MAX_VALUE);

        int port = RealParts.freePort();
        Path config = Files.writeString(dir.resolve("mirror.yaml"), """
                server: {port: %d, host: 127.0.0.1}
                storage: {path: '%s', maxSize: 64MiB, minFree: 0}
                upstreams:
                  - name: docker.io
                    url: %s
                """.formatted(port, dir.resolve("data"), hub.url()));
        try (RealParts.Child mirror = RealParts.mirror(dir, port, List.of("-Xms256m", "-XX:+AlwaysPreTouch"),
                "--config", config.toString())) {
            RealParts.awaitUp("http://127.0.0.1:" + port + "/v2/", mirror);
            long pid = mirror.process.pid();
            long connectionsBefore = clientConnections(pid, port); // the JDK client of the readiness check may linger
            HttpClient client = vertx.createHttpClient(new HttpClientOptions().setDefaultHost("127.0.0.1")
                    .setDefaultPort(port).setKeepAlive(true), new PoolOptions().setHttp1MaxSize(CONNECTIONS));
            for (Blob b : cached) {
                await(fetch(client, "/v2/library/app/blobs/" + b.digest(), b.digest()));
            }
            long fdsBefore = fds(pid);

            AtomicLong ok = new AtomicLong();
            AtomicLong bytes = new AtomicLong();
            ConcurrentLinkedQueue<String> errors = new ConcurrentLinkedQueue<>();
            AtomicInteger nextUncached = new AtomicInteger();
            long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(SECONDS);
            List<Long> rss = new ArrayList<>();
            long sampler = vertx.setPeriodic(2000, t -> rss.add(residentBytes(pid)));
            List<Future<Void>> users = new ArrayList<>();
            for (int u = 0; u < CONNECTIONS; u++) {
                Random r = new Random(u);
                Promise<Void> finished = Promise.promise();
                users.add(finished.future());
                vertx.runOnContext(v -> loop(client, r, end, cached, uncached, nextUncached, manifest, ok, bytes,
                        errors, finished));
            }
            // Live heap (after a full collection) once warmed up, and at the end, still under load.
            while (ok.get() < CONNECTIONS * 30L && !users.get(0).isComplete()) {
                Thread.sleep(20); // polling the answer count
            }
            long liveEarly = liveHeap(client, pid);
            users.get(0).toCompletionStage().toCompletableFuture().get(SECONDS + 60, TimeUnit.SECONDS);
            long liveLate = liveHeap(client, pid);
            for (Future<Void> user : users) {
                user.toCompletionStage().toCompletableFuture().get(SECONDS + 60, TimeUnit.SECONDS);
            }
            vertx.cancelTimer(sampler);
            String metrics = metrics(client);
            await(client.close());

            System.out.printf("load: %d answers, %d MiB, %d errors, evictions: %s%n", ok.get(), bytes.get() >> 20,
                    errors.size(), metrics.lines().filter(l -> l.startsWith("registrymirror_evictions_total"))
                            .toList());
            assertThat(errors).as("errors (first ones)").isEmpty();
            assertThat(ok.get()).isGreaterThan(CONNECTIONS * 10L);
            assertThat(Exposition.value(metrics, "registrymirror_evictions_total{kind=\"blob\",reason=\"size\"}"))
                    .isPositive();
            assertThat(mirror.process.isAlive()).isTrue();
            assertThat(mirror.log()).doesNotContain("OutOfMemoryError").doesNotContain("ERROR");

            // Every client connection closed, every download finished: no descriptor is left behind but
            // pooled upstream connections (kept alive for reuse, at most 64 per upstream host).
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while ((clientConnections(pid, port) > connectionsBefore || files(dir.resolve("data/tmp")) > 0)
                    && System.nanoTime() < deadline) {
                Thread.sleep(50); // polling another process
            }
            List<String> targets = fdTargets(pid);
            assertThat(clientConnections(pid, port)).as("client connections still open")
                    .isLessThanOrEqualTo(connectionsBefore);
            // The index database stays open (a fixed number of connections, opened at the start); nothing else may.
            assertThat(targets).as("cache files still open").noneMatch(t -> t.startsWith(dir.resolve("data").toString())
                    && !t.startsWith(dir.resolve("data/index").toString()));
            long sockets = targets.stream().filter(t -> t.startsWith("socket:")).count();
            long others = targets.size() - sockets;
            assertThat(others).as("descriptors other than sockets, before: " + fdsBefore + ": " + targets)
                    .isLessThanOrEqualTo(fdsBefore);
            assertThat(sockets).as("sockets: the listener and pooled upstream connections")
                    .isLessThanOrEqualTo(1 + 3 * 64);
            assertThat(files(dir.resolve("data/tmp"))).isZero();

            // Memory flat: the heap is committed and touched from the start (-Xms256m, AlwaysPreTouch), so the
            // resident size grows only with what lives outside it (direct buffers, threads, code); and the
            // heap that survives a full collection does not grow either.
            int third = rss.size() / 3;
            long early = rss.subList(third, 2 * third).stream().mapToLong(Long::longValue).max().orElseThrow();
            long late = rss.subList(2 * third, rss.size()).stream().mapToLong(Long::longValue).max().orElseThrow();
            System.out.printf("load: resident memory, max of the second third %d MiB, of the last third %d MiB;"
                    + " live heap %d MiB then %d MiB%n", early >> 20, late >> 20, liveEarly >> 20, liveLate >> 20);
            assertThat(late).as("resident bytes late vs early").isLessThanOrEqualTo(early + early / 10 + (16L << 20));
            assertThat(liveLate).as("live heap late vs early").isLessThanOrEqualTo(liveEarly + (16L << 20));
        }
    }

    private void loop(HttpClient client, Random r, long end, List<Blob> cached, List<Blob> uncached,
                      AtomicInteger nextUncached, Digest manifest, AtomicLong ok, AtomicLong bytes,
                      ConcurrentLinkedQueue<String> errors, Promise<Void> finished) {
        if (System.nanoTime() >= end || errors.size() > 20) {
            finished.complete();
            return;
        }
        int pick = r.nextInt(100);
        String path;
        Digest expected;
        if (pick < 70) {
            Blob b = cached.get(r.nextInt(cached.size()));
            path = "/v2/library/app/blobs/" + b.digest();
            expected = b.digest();
        } else if (pick < 85) {
            Blob b = uncached.get((nextUncached.getAndIncrement() / 2) % uncached.size()); // two clients at once
            path = "/v2/library/app/blobs/" + b.digest();
            expected = b.digest();
        } else {
            path = "/v2/library/app/manifests/" + (r.nextBoolean() ? "1" : manifest.toString());
            expected = manifest;
        }
        fetch(client, path, expected).onComplete(ar -> {
            if (ar.succeeded()) {
                ok.incrementAndGet();
                bytes.addAndGet(ar.result());
            } else {
                errors.add(path + ": " + ar.cause());
            }
            loop(client, r, end, cached, uncached, nextUncached, manifest, ok, bytes, errors, finished);
        });
    }

    /** GETs {@code path} and checks the body against {@code digest}; yields the body's length. */
    private static Future<Long> fetch(HttpClient client, String path, Digest digest) {
        return client.request(new RequestOptions().setMethod(HttpMethod.GET).setURI(path)
                        .putHeader("Accept", String.join(", ", MediaTypes.MANIFESTS)).setTimeout(60_000))
                .compose(req -> req.send())
                .compose(resp -> resp.body().compose(body -> {
                    if (resp.statusCode() != 200) {
                        return Future.failedFuture("status " + resp.statusCode() + ": " + body);
                    }
                    if (!Digest.of(digest.algorithm(), body.getBytes()).equals(digest)) {
                        return Future.failedFuture("body does not match " + digest);
                    }
                    return Future.succeededFuture((long) body.length());
                }));
    }

    private static String metrics(HttpClient client) throws Exception {
        return await(client.request(HttpMethod.GET, "/metrics").compose(req -> req.send())
                .compose(resp -> resp.body())).toString();
    }

    /** Heap in use right after a full collection that {@code jcmd} asked for. */
    private static long liveHeap(HttpClient client, long pid) throws Exception {
        Path jcmd = Path.of(System.getProperty("java.home"), "bin", "jcmd");
        RealParts.run(java.time.Duration.ofSeconds(30), jcmd.toString(), Long.toString(pid), "GC.run");
        long used = 0;
        for (String line : metrics(client).split("\n")) {
            if (line.startsWith("jvm_memory_used_bytes{area=\"heap\"")) {
                used += (long) Double.parseDouble(line.substring(line.lastIndexOf(' ') + 1));
            }
        }
        return used;
    }

    private static long fds(long pid) throws Exception {
        return files(Path.of("/proc", Long.toString(pid), "fd"));
    }

    private static List<String> fdTargets(long pid) throws Exception {
        List<String> out = new ArrayList<>();
        try (Stream<Path> s = Files.list(Path.of("/proc", Long.toString(pid), "fd"))) {
            for (Path p : (Iterable<Path>) s::iterator) {
                try {
                    out.add(Files.readSymbolicLink(p).toString());
                } catch (java.io.IOException e) {
                    // closed meanwhile
                }
            }
        }
        return out;
    }

    /** Established TCP connections of the process whose local port is the mirror's: its clients. */
    private static long clientConnections(long pid, int port) throws Exception {
        java.util.Set<String> inodes = new java.util.HashSet<>();
        for (String t : fdTargets(pid)) {
            if (t.startsWith("socket:[")) {
                inodes.add(t.substring(8, t.length() - 1));
            }
        }
        long n = 0;
        for (String table : new String[] {"tcp", "tcp6"}) {
            Path file = Path.of("/proc", Long.toString(pid), "net", table);
            if (!Files.exists(file)) {
                continue;
            }
            for (String line : Files.readAllLines(file)) {
                String[] f = line.trim().split("\\s+");
                if (f.length < 10 || !f[3].equals("01")) {
                    continue; // header, or not ESTABLISHED
                }
                String local = f[1];
                int localPort = Integer.parseInt(local.substring(local.indexOf(':') + 1), 16);
                if (localPort == port && inodes.contains(f[9])) {
                    n++;
                }
            }
        }
        return n;
    }

    private static long files(Path dir) throws Exception {
        try (Stream<Path> s = Files.list(dir)) {
            return s.count();
        }
    }

    private static long residentBytes(long pid) {
        try {
            for (String line : Files.readAllLines(Path.of("/proc", Long.toString(pid), "status"))) {
                if (line.startsWith("VmRSS:")) {
                    return Long.parseLong(line.replaceAll("\\D+", "")) * 1024;
                }
            }
        } catch (Exception e) {
            // the process is gone: the assertions on it say so
        }
        return 0;
    }
}
