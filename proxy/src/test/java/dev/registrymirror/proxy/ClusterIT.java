package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Three replicas of the jar on loopback as one cache, in front of a counting fake upstream: each blob
 * is fetched from the upstream once for the whole cluster and stored once, whichever replica clients
 * ask; a replica that dies takes only its share with it; a request that does not carry the cluster's
 * signature is refused.
 */
class ClusterIT extends FakeHubIT {
    static final String SECRET = "the-cluster-secret-of-these-replicas-0123";

    @TempDir
    Path dir;
    final List<RealParts.Child> replicas = new ArrayList<>();
    final List<Integer> httpPorts = new ArrayList<>();
    final List<Integer> memberPorts = new ArrayList<>();
    final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();

    @AfterEach
    void stopReplicas() {
        replicas.forEach(r -> {
            if (r != null) {
                r.close();
            }
        });
    }

    RealParts.Child start(int i, String secret) throws Exception {
        return start(i, secret, 1);
    }

    RealParts.Child start(int i, String secret, int copies) throws Exception {
        Path config = Files.writeString(dir.resolve("mirror-" + i + ".yaml"), """
                server: {port: %d, host: 127.0.0.1}
                storage: {path: '%s', minFree: 0}
                upstreams:
                  - name: docker.io
                    url: %s
                cluster:
                  name: it
                  secret: '%s'
                  bind: 127.0.0.1:%d
                  members: [%s]
                  url: http://127.0.0.1:%d
                  failureDetection: 2s
                  copies: %d
                """.formatted(httpPorts.get(i), dir.resolve("data-" + i), hub.url(), secret, memberPorts.get(i),
                String.join(", ", memberPorts.stream().map(p -> "'127.0.0.1:" + p + "'").toList()), httpPorts.get(i),
                copies));
        RealParts.Child child = RealParts.mirror(dir.resolve("r" + i), httpPorts.get(i), "--config", config.toString());
        RealParts.awaitUp("http://127.0.0.1:" + httpPorts.get(i) + "/v2/", child);
        return child;
    }

    String url(int replica, String path) {
        return "http://127.0.0.1:" + httpPorts.get(replica) + path;
    }

    double metric(int replica, String series) throws Exception {
        String text = http.send(HttpRequest.newBuilder(URI.create(url(replica, "/metrics"))).build(),
                HttpResponse.BodyHandlers.ofString()).body();
        return Exposition.value(text, series);
    }

    static void awaitTrue(String what, Check condition) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(40);
        while (!condition.holds()) {
            assertThat(System.nanoTime()).as(what).isLessThan(deadline);
            Thread.sleep(50); // polling other processes
        }
    }

    interface Check {
        boolean holds() throws Exception;
    }

    String sha256(byte[] b) throws Exception {
        return "sha256:" + HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(b));
    }

    HttpResponse<byte[]> get(int replica, String path, String... headers) throws Exception {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(url(replica, path))).timeout(Duration.ofSeconds(30));
        for (int i = 0; i < headers.length; i += 2) {
            b.header(headers[i], headers[i + 1]);
        }
        return http.send(b.build(), HttpResponse.BodyHandlers.ofByteArray());
    }

    long storedCopies(Digest d) throws IOException {
        long n = 0;
        for (int i = 0; i < 3; i++) {
            if (holds(i, d)) {
                n++;
            }
        }
        return n;
    }

    boolean holds(int replica, Digest d) {
        return Files.exists(dir.resolve("data-" + replica).resolve("blobs/sha256").resolve(d.hex().substring(0, 2))
                .resolve(d.hex()));
    }

    void ports(int n) throws IOException {
        for (int i = 0; i < n; i++) {
            httpPorts.add(RealParts.freePort());
            memberPorts.add(RealParts.freePort());
        }
    }

    /** {@code n} distinct blobs put upstream, each pulled once through one of the first {@code through} replicas. */
    List<Digest> pullDistinct(int n, int through, int seed) throws Exception {
        List<Digest> blobs = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            byte[] b = MirrorTestBase.randomBytes(40_000, seed + i);
            Digest bd = hub.putBlob(b);
            blobs.add(bd);
            HttpResponse<byte[]> r = get(i % through, "/v2/library/app/blobs/" + bd);
            assertThat(r.statusCode()).isEqualTo(200);
            assertThat(r.body()).isEqualTo(b);
        }
        return blobs;
    }

    long upstreamGets(List<Digest> blobs) {
        return blobs.stream().mapToLong(this::upstreamGets).sum();
    }

    long upstreamGets(Digest d) {
        return hub.count("cdn", "GET", "/blobs/" + d);
    }

    @Test
    void threeReplicasAreOneCache() throws Exception {
        for (int i = 0; i < 3; i++) {
            httpPorts.add(RealParts.freePort());
            memberPorts.add(RealParts.freePort());
        }
        for (int i = 0; i < 3; i++) {
            replicas.add(start(i, SECRET));
        }
        for (int i = 0; i < 3; i++) {
            int r = i;
            awaitTrue("replica " + i + " sees three members",
                    () -> metric(r, "registrymirror_cluster_members") == 3);
        }

        // One blob asked of every replica at once: one upstream fetch, one stored copy, every byte right.
        byte[] layer = MirrorTestBase.randomBytes(6_000_000, 1);
        Digest d = hub.putBlob(layer);
        List<CompletableFuture<HttpResponse<byte[]>>> pulls = new ArrayList<>();
        for (int i = 0; i < 9; i++) {
            HttpRequest req = HttpRequest.newBuilder(URI.create(url(i % 3, "/v2/library/app/blobs/" + d))).build();
            pulls.add(http.sendAsync(req, HttpResponse.BodyHandlers.ofByteArray()));
        }
        for (CompletableFuture<HttpResponse<byte[]>> p : pulls) {
            HttpResponse<byte[]> r = p.get(60, TimeUnit.SECONDS);
            assertThat(r.statusCode()).isEqualTo(200);
            assertThat(sha256(r.body())).isEqualTo(d.toString());
        }
        assertThat(upstreamGets(d)).as("fetched once for the cluster").isEqualTo(1);
        awaitTrue("stored once", () -> storedCopies(d) == 1);
        double hops = 0;
        for (int i = 0; i < 3; i++) {
            hops += metric(i, "registrymirror_cluster_hop_requests_total{direction=\"out\"}");
        }
        assertThat(hops).as("the two replicas that do not own it asked the owner").isGreaterThanOrEqualTo(6);

        // 30 distinct blobs, each asked of one replica: one stored copy each, spread over the three.
        List<Digest> blobs = new ArrayList<>();
        for (int i = 0; i < 30; i++) {
            byte[] b = MirrorTestBase.randomBytes(50_000, 100 + i);
            Digest bd = hub.putBlob(b);
            blobs.add(bd);
            assertThat(get(i % 3, "/v2/library/app/blobs/" + bd).body()).isEqualTo(b);
        }
        for (Digest bd : blobs) {
            awaitTrue("one copy of " + bd, () -> storedCopies(bd) == 1);
            assertThat(upstreamGets(bd)).isEqualTo(1);
        }

        // A request with a forged hop signature is refused.
        HttpResponse<byte[]> forged = get(0, "/v2/library/app/blobs/" + d + "?ns=docker.io",
                "X-Registry-Mirror-Hop", "t=" + (System.currentTimeMillis() / 1000) + ",s=00ff");
        assertThat(forged.statusCode()).isEqualTo(403);
        assertThat(new String(forged.body())).contains("DENIED");

        // One replica is killed: only the blobs it held are fetched again, through the others.
        replicas.get(2).process.destroyForcibly().waitFor();
        awaitTrue("the others see two members", () -> metric(0, "registrymirror_cluster_members") == 2
                && metric(1, "registrymirror_cluster_members") == 2);
        long heldByDead = blobs.stream().filter(bd -> Files.exists(dir.resolve("data-2").resolve("blobs/sha256")
                .resolve(bd.hex().substring(0, 2)).resolve(bd.hex()))).count();
        long before = blobs.stream().mapToLong(this::upstreamGets).sum();
        for (int i = 0; i < blobs.size(); i++) {
            assertThat(get(i % 2, "/v2/library/app/blobs/" + blobs.get(i)).statusCode()).isEqualTo(200);
        }
        long refetched = blobs.stream().mapToLong(this::upstreamGets).sum() - before;
        assertThat(refetched).as("refetches: the dead replica's share").isEqualTo(heldByDead);
        assertThat(heldByDead).isBetween(3L, 20L);

        // It comes back with its disk: it owns its share again and serves it without a refetch.
        replicas.set(2, start(2, SECRET));
        awaitTrue("three members again", () -> metric(0, "registrymirror_cluster_members") == 3
                && metric(2, "registrymirror_cluster_members") == 3);
        long beforeReturn = blobs.stream().mapToLong(this::upstreamGets).sum();
        for (int i = 0; i < blobs.size(); i++) {
            assertThat(get(i % 3, "/v2/library/app/blobs/" + blobs.get(i)).statusCode()).isEqualTo(200);
        }
        assertThat(blobs.stream().mapToLong(this::upstreamGets).sum()).as("no refetch after the return")
                .isEqualTo(beforeReturn);
    }

    @Test
    void aReplicaWithAnotherSecretIsNotLetIn() throws Exception {
        for (int i = 0; i < 3; i++) {
            httpPorts.add(RealParts.freePort());
            memberPorts.add(RealParts.freePort());
        }
        replicas.add(start(0, SECRET));
        replicas.add(start(1, SECRET));
        awaitTrue("two members", () -> metric(0, "registrymirror_cluster_members") == 2);
        replicas.add(start(2, "another-secret-that-is-long-enough-000000"));
        awaitTrue("the stranger stands alone", () -> metric(2, "registrymirror_cluster_members") == 1
                && replicas.get(2).log().contains("joined as"));
        assertThat(metric(0, "registrymirror_cluster_members")).isEqualTo(2);
        assertThat(metric(1, "registrymirror_cluster_members")).isEqualTo(2);
    }

    @Test
    void aReplicaThatJoinsTakesItsShareFromTheOldHolders() throws Exception {
        ports(3);
        replicas.add(start(0, SECRET));
        replicas.add(start(1, SECRET));
        awaitTrue("two members", () -> metric(0, "registrymirror_cluster_members") == 2
                && metric(1, "registrymirror_cluster_members") == 2);
        List<Digest> blobs = pullDistinct(30, 2, 500);
        assertThat(upstreamGets(blobs)).isEqualTo(30);

        replicas.add(start(2, SECRET));
        awaitTrue("three members", () -> metric(0, "registrymirror_cluster_members") == 3
                && metric(1, "registrymirror_cluster_members") == 3 && metric(2, "registrymirror_cluster_members") == 3);
        for (int i = 0; i < blobs.size(); i++) {
            HttpResponse<byte[]> r = get(i % 3, "/v2/library/app/blobs/" + blobs.get(i));
            assertThat(r.statusCode()).isEqualTo(200);
            assertThat(sha256(r.body())).isEqualTo(blobs.get(i).toString());
        }
        assertThat(upstreamGets(blobs)).as("no refetch: the new owner asked the old holders first").isEqualTo(30);
        long taken = blobs.stream().filter(b -> holds(2, b)).count();
        assertThat(taken).as("the new replica took over its share").isBetween(3L, 20L);
        assertThat(replicas.get(2).log()).contains("it held it");
    }

    @Test
    void withTwoCopiesLosingAReplicaCostsNoRefetch() throws Exception {
        ports(3);
        for (int i = 0; i < 3; i++) {
            replicas.add(start(i, SECRET, 2));
        }
        for (int i = 0; i < 3; i++) {
            int r = i;
            awaitTrue("replica " + i + " sees three members", () -> metric(r, "registrymirror_cluster_members") == 3);
        }
        List<Digest> blobs = pullDistinct(20, 3, 900);
        for (Digest b : blobs) {
            awaitTrue("two copies of " + b, () -> storedCopies(b) == 2);
        }
        assertThat(upstreamGets(blobs)).as("one upstream fetch each, for two copies").isEqualTo(20);

        replicas.get(1).process.destroyForcibly().waitFor();
        awaitTrue("the others see two members", () -> metric(0, "registrymirror_cluster_members") == 2
                && metric(2, "registrymirror_cluster_members") == 2);
        for (int i = 0; i < blobs.size(); i++) {
            HttpResponse<byte[]> r = get(i % 2 == 0 ? 0 : 2, "/v2/library/app/blobs/" + blobs.get(i));
            assertThat(r.statusCode()).isEqualTo(200);
            assertThat(sha256(r.body())).isEqualTo(blobs.get(i).toString());
        }
        assertThat(upstreamGets(blobs)).as("losing one replica of two copies costs no refetch").isEqualTo(20);
    }

    /** The index of the replica that owns blob {@code d}, by the same rule the replicas use. */
    int ownerOf(Digest d) {
        List<URI> urls = httpPorts.stream().map(p -> URI.create("http://127.0.0.1:" + p)).sorted().toList();
        URI owner = dev.registrymirror.proxy.cluster.Ring.owners(urls, "blob " + d, 1).get(0);
        return httpPorts.indexOf(owner.getPort());
    }

    @Test
    void anOwnerThatDiesMidStreamLeavesABrokenConnectionAndNothingWrongStored() throws Exception {
        ports(3);
        for (int i = 0; i < 3; i++) {
            replicas.add(start(i, SECRET));
        }
        for (int i = 0; i < 3; i++) {
            int r = i;
            awaitTrue("replica " + i + " sees three members", () -> metric(r, "registrymirror_cluster_members") == 3);
        }
        byte[] layer = MirrorTestBase.randomBytes(8_000_000, 7);
        Digest d = hub.putBlob(layer);
        int owner = ownerOf(d);
        int client = (owner + 1) % 3;
        hub.holdSecondHalf = io.vertx.core.Promise.promise();

        // A client pulls through a replica that does not own the blob; the owner streams the first half.
        HttpResponse<java.io.InputStream> resp = http.send(HttpRequest.newBuilder(
                URI.create(url(client, "/v2/library/app/blobs/" + d))).build(), HttpResponse.BodyHandlers.ofInputStream());
        assertThat(resp.statusCode()).isEqualTo(200);
        assertThat(resp.headers().firstValueAsLong("Content-Length").orElse(-1)).isEqualTo(layer.length);
        java.io.InputStream in = resp.body();
        byte[] buf = new byte[64 * 1024];
        long got = 0;
        while (got < 1_000_000) {
            int n = in.read(buf);
            assertThat(n).as("the first half flows before the owner dies").isPositive();
            got += n;
        }

        // The owner dies: the client's body breaks off, never ending as if it were whole.
        replicas.get(owner).process.destroyForcibly().waitFor();
        Throwable broken = null;
        try {
            while (in.read(buf) >= 0) {
                // drain what was sent before the owner died
            }
        } catch (IOException e) {
            broken = e;
        }
        assertThat(broken).as("a broken connection, not a short body that looks complete").isNotNull();
        hub.holdSecondHalf.tryComplete();

        // Nothing was stored on the way; once the others see the owner gone, the new owner serves it whole.
        assertThat(holds(client, d)).isFalse();
        awaitTrue("the others see two members", () -> metric(client, "registrymirror_cluster_members") == 2);
        HttpResponse<byte[]> again = get(client, "/v2/library/app/blobs/" + d);
        assertThat(again.statusCode()).isEqualTo(200);
        assertThat(again.body()).isEqualTo(layer);
        int newOwner = ownerOf2(d, owner);
        awaitTrue("stored once, on the new owner", () -> storedCopies(d) == 1 && holds(newOwner, d));
    }

    /** The owner of {@code d} among the replicas other than {@code gone}. */
    int ownerOf2(Digest d, int gone) {
        List<URI> urls = new ArrayList<>();
        for (int i = 0; i < httpPorts.size(); i++) {
            if (i != gone) {
                urls.add(URI.create("http://127.0.0.1:" + httpPorts.get(i)));
            }
        }
        URI owner = dev.registrymirror.proxy.cluster.Ring.owners(urls.stream().sorted().toList(), "blob " + d, 1).get(0);
        return httpPorts.indexOf(owner.getPort());
    }
}
