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
 * Tags and manifests in a cluster of three replicas (in one JVM, with one injected clock): a tag has
 * one owner, and only the owner asks the upstream, at most once per TTL for the whole cluster; the
 * others ask the owner and keep its answer only for the rest of the TTL the owner's check left, so
 * that no replica serves a tag longer than one TTL after the upstream last confirmed it. A manifest
 * by digest is fetched once for the cluster, by its owner.
 */
class ClusterManifestTest extends ClusterTestBase {
    /** The index of the replica that owns {@code library/app:tag}, by the same rule the replicas use. */
    int tagOwner(String tag) {
        return ownerOf("tag docker.io/library/app:" + tag);
    }

    Digest putTag(String tag, String content) {
        return hub.putManifest("library/app", tag, MediaTypes.OCI_MANIFEST,
                ("{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{},"
                        + "\"layers\":[],\"annotations\":{\"v\":\"" + content + "\"}}").getBytes(StandardCharsets.UTF_8));
    }

    /** Requests for the tag's manifest the upstream answered (each first met its token challenge unauthorized). */
    long upstreamTagRequests(String method, String tag) {
        return upstreamAsks(method, "/manifests/" + tag);
    }

    long upstreamAsks(String method, String path) {
        return hub.seen("registry").stream().filter(s -> s.method().equals(method) && s.path().contains(path)
                && s.authorization() != null).count();
    }

    @Test
    void onlyTheTagsOwnerAsksTheUpstreamOncePerTtl() throws Exception {
        Digest first = putTag("1.0", "first");
        int owner = tagOwner("1.0");
        int a = (owner + 1) % 3;
        int b = (owner + 2) % 3;

        // The owner fetches it; the others ask the owner: one upstream GET for the cluster.
        assertThat(digestAt(owner, "1.0")).isEqualTo(first.toString());
        clock.advance(Duration.ofMinutes(4));
        assertThat(digestAt(a, "1.0")).isEqualTo(first.toString());
        assertThat(digestAt(b, "1.0")).isEqualTo(first.toString());
        assertThat(upstreamTagRequests("GET", "1.0")).isEqualTo(1);
        assertThat(upstreamTagRequests("HEAD", "1.0")).isZero();

        // The tag moves upstream. A replica that asked the owner at minute 4 keeps the tag only until
        // minute 5, when the owner's check expires; at minute 6 each replica sees the new digest, and
        // the upstream was asked once (a HEAD, then the GET of what it now points at).
        clock.advance(Duration.ofSeconds(90));
        Digest second = putTag("1.0", "second");
        clock.advance(Duration.ofSeconds(30));
        assertThat(digestAt(a, "1.0")).isEqualTo(second.toString());
        assertThat(digestAt(b, "1.0")).isEqualTo(second.toString());
        assertThat(digestAt(owner, "1.0")).isEqualTo(second.toString());
        for (int i = 0; i < 3; i++) {
            assertThat(digestAt(i, "1.0")).isEqualTo(second.toString());
        }
        assertThat(upstreamTagRequests("HEAD", "1.0")).as("one revalidation for the cluster").isEqualTo(1);
        assertThat(upstreamTagRequests("GET", "1.0")).isEqualTo(2);

        // Within the TTL of that check, nobody asks anybody.
        clock.advance(Duration.ofMinutes(4));
        for (int i = 0; i < 3; i++) {
            assertThat(digestAt(i, "1.0")).isEqualTo(second.toString());
        }
        assertThat(upstreamTagRequests("HEAD", "1.0")).isEqualTo(1);
        assertThat(upstreamTagRequests("GET", "1.0")).isEqualTo(2);

        // Every replica, many times, after the TTL: one HEAD more for the cluster.
        clock.advance(Duration.ofMinutes(2));
        for (int round = 0; round < 3; round++) {
            for (int i = 0; i < 3; i++) {
                assertThat(digestAt(i, "1.0")).isEqualTo(second.toString());
            }
        }
        assertThat(upstreamTagRequests("HEAD", "1.0")).isEqualTo(2);
        assertThat(upstreamTagRequests("GET", "1.0")).isEqualTo(2);
    }

    @Test
    void aManifestByDigestIsFetchedOnceForTheCluster() throws Exception {
        Digest d = putTag("2.0", "by digest");
        for (int i = 0; i < 3; i++) {
            assertThat(digestAt(i, d.toString())).isEqualTo(d.toString());
        }
        assertThat(upstreamAsks("GET", "/manifests/" + d)).isEqualTo(1);
    }

    @Test
    void theStatusPageShowsTheMembersAndTheTrafficBetweenThem() throws Exception {
        putTag("3.0", "status");
        int owner = tagOwner("3.0");
        int other = (owner + 1) % 3;
        int gone = (owner + 2) % 3;
        digestAt(other, "3.0");
        io.vertx.core.json.JsonObject status = new io.vertx.core.json.JsonObject(
                new String(get(other, "/status.json").body(), StandardCharsets.UTF_8));
        io.vertx.core.json.JsonObject cluster = status.getJsonObject("cluster");
        assertThat(cluster.getString("name")).isEqualTo("manifests");
        assertThat(cluster.getString("self")).isEqualTo("http://127.0.0.1:" + ports.get(other));
        assertThat(cluster.getJsonArray("members")).hasSize(3);
        assertThat(cluster.getJsonArray("members").stream().map(io.vertx.core.json.JsonObject.class::cast)
                .filter(m -> m.getBoolean("self")).map(m -> m.getString("url")).toList())
                .containsExactly("http://127.0.0.1:" + ports.get(other));
        assertThat(cluster.getJsonObject("hops").getLong("requestsOut")).isPositive();
        assertThat(cluster.getJsonObject("hops").getLong("bytesOut")).isPositive();

        // A replica stops: the others show it gone, and when.
        await(replicas.get(gone).stop());
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (members(other) != 2) {
            assertThat(System.nanoTime()).as("the others see it go").isLessThan(deadline);
            Thread.sleep(50); // the membership changes on JGroups' threads
        }
        cluster = new io.vertx.core.json.JsonObject(new String(get(other, "/status.json").body(), StandardCharsets.UTF_8))
                .getJsonObject("cluster");
        assertThat(cluster.getJsonArray("members").stream().map(io.vertx.core.json.JsonObject.class::cast)
                .filter(m -> m.getString("state").equals("gone")).map(m -> m.getString("url")).toList())
                .containsExactly("http://127.0.0.1:" + ports.get(gone));
        replicas.set(gone, null);
    }
}
