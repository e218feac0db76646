package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import dev.registrymirror.config.ConfigLoader;
import dev.registrymirror.proxy.cluster.Ring;
import dev.registrymirror.proxy.manifest.MediaTypes;
import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Three replicas of the mirror in one JVM as one cluster, sharing one injected clock, in front of the
 * fake hub; the top-level YAML of {@link #topLevelYaml} (access rules) goes to each.
 */
abstract class ClusterTestBase extends MirrorTestBase {
    static final String SECRET = "the-cluster-secret-of-these-replicas-0123";

    final List<Mirror> replicas = new ArrayList<>();
    final List<Integer> ports = new ArrayList<>();
    final List<Integer> memberPorts = new ArrayList<>();

    @BeforeEach
    void startReplicas() throws Exception {
        for (int i = 0; i < 3; i++) {
            ports.add(RealParts.freePort());
            memberPorts.add(RealParts.freePort());
        }
        for (int i = 0; i < 3; i++) {
            String yaml = """
                    server: {port: %d, host: 127.0.0.1, eventLoops: %d, shutdownTimeout: 2s}
                    storage: {path: '%s', minFree: 0}
                    %s
                    cluster:
                      name: manifests
                      secret: '%s'
                      bind: 127.0.0.1:%d
                      members: [%s]
                      url: http://127.0.0.1:%d
                      failureDetection: 2s
                    %s
                    """.formatted(ports.get(i), EVENT_LOOPS, storage.resolve("replica-" + i), upstreamsYaml(), SECRET,
                    memberPorts.get(i), String.join(", ", memberPorts.stream().map(p -> "'127.0.0.1:" + p + "'").toList()),
                    ports.get(i), topLevelYaml());
            replicas.add(await(Mirror.start(vertx, ConfigLoader.parse(yaml, Map.of(), ConfigLoader.Overrides.none()),
                    clock)));
        }
        for (int i = 0; i < 3; i++) {
            int r = i;
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(40);
            while (members(r) != 3) {
                assertThat(System.nanoTime()).as("replica " + r + " sees three members").isLessThan(deadline);
                Thread.sleep(50); // the membership forms on JGroups' threads
            }
        }
    }

    @AfterEach
    void stopReplicas() {
        for (Mirror m : replicas) {
            if (m != null) {
                await(m.stop());
            }
        }
    }

    double members(int replica) throws Exception {
        String text = http.send(HttpRequest.newBuilder(URI.create(at(replica, "/metrics"))).build(),
                HttpResponse.BodyHandlers.ofString()).body();
        return Exposition.value(text, "registrymirror_cluster_members");
    }

    String at(int replica, String path) {
        return "http://127.0.0.1:" + ports.get(replica) + path;
    }

    HttpResponse<byte[]> get(int replica, String path, String... headers) throws Exception {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(at(replica, path))).timeout(Duration.ofSeconds(20));
        for (int i = 0; i < headers.length; i += 2) {
            b.header(headers[i], headers[i + 1]);
        }
        return http.send(b.build(), HttpResponse.BodyHandlers.ofByteArray());
    }

    /** The index of the replica that owns {@code key} (a Ring key), by the same rule the replicas use. */
    int ownerOf(String key) {
        List<URI> urls = ports.stream().map(p -> URI.create("http://127.0.0.1:" + p)).sorted().toList();
        return ports.indexOf(Ring.owners(urls, key, 1).get(0).getPort());
    }

    HttpResponse<byte[]> manifest(int replica, String reference) throws Exception {
        return http.send(HttpRequest.newBuilder(URI.create(at(replica, "/v2/library/app/manifests/" + reference)))
                .header("Accept", TYPES).timeout(Duration.ofSeconds(20)).build(), HttpResponse.BodyHandlers.ofByteArray());
    }

    String digestAt(int replica, String reference) throws Exception {
        HttpResponse<byte[]> r = manifest(replica, reference);
        assertThat(r.statusCode()).isEqualTo(200);
        return r.headers().firstValue("Docker-Content-Digest").orElseThrow();
    }

}
