package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/**
 * The admin API in a cluster: a prefetch asked of any replica leaves each blob on its owner (one
 * upstream fetch each, no copy on the replica that ran the job), and a removal asked of any replica
 * reaches the replica that holds the content, answering what each replica removed.
 */
class ClusterAdminTest extends ClusterTestBase {
    static final String TOKEN = "admin-token-0123456789abcdef";

    @Override
    String topLevelYaml() {
        return "admin: {token: " + TOKEN + "}\n";
    }

    HttpResponse<byte[]> call(int replica, String method, String path, String body) throws Exception {
        return http.send(HttpRequest.newBuilder(URI.create(at(replica, path))).header("Authorization", "Bearer " + TOKEN)
                        .method(method, body == null ? HttpRequest.BodyPublishers.noBody()
                                : HttpRequest.BodyPublishers.ofString(body)).build(),
                HttpResponse.BodyHandlers.ofByteArray());
    }

    /** Every blob stored on {@code replica}. */
    List<String> blobsOn(int replica) throws Exception {
        Path dir = storage.resolve("replica-" + replica).resolve("blobs/sha256");
        if (!Files.isDirectory(dir)) {
            return List.of();
        }
        try (Stream<Path> files = Files.walk(dir)) {
            return files.filter(Files::isRegularFile).map(p -> "sha256:" + p.getFileName()).toList();
        }
    }

    @Test
    void aPrefetchLeavesEachBlobOnItsOwnerAndARemovalReachesIt() throws Exception {
        byte[] layer = randomBytes(300_000, 11);
        hub.putImage("library/alpine", "3.19", layer);
        Digest layerDigest = Digest.of("sha256", layer);
        int runner = (ownerOf("blob " + layerDigest) + 1) % 3; // a replica that does not own the layer

        HttpResponse<byte[]> started = call(runner, "POST", "/admin/prefetch", "{\"image\": \"docker.io/alpine:3.19\"}");
        assertThat(started.statusCode()).isEqualTo(202);
        String id = new JsonObject(new String(started.body())).getString("id");
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        JsonObject job;
        do {
            assertThat(System.nanoTime()).as("the job ends").isLessThan(deadline);
            Thread.sleep(20); // the job runs on the replica's loops
            job = new JsonObject(new String(call(runner, "GET", "/admin/prefetch/" + id, null).body()));
        } while (job.getString("state").equals("running"));
        assertThat(job.getString("state")).as(job.encode()).isEqualTo("done");
        assertThat(job.getLong("blobs")).isEqualTo(2);

        // Each blob (the config and the layer) is on its owner, and only there; fetched once each.
        List<String> all = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            for (String d : blobsOn(i)) {
                assertThat(ownerOf("blob " + d)).as("%s is on its owner", d).isEqualTo(i);
                all.add(d);
            }
        }
        assertThat(all).hasSize(2).contains(layerDigest.toString());
        assertThat(hub.count("cdn", "GET", "/blobs/")).isEqualTo(2);

        // A removal asked of a replica that does not hold the layer reaches the one that does.
        HttpResponse<byte[]> removed = call(runner, "DELETE", "/admin/digests/" + layerDigest, null);
        assertThat(removed.statusCode()).as(new String(removed.body())).isEqualTo(200);
        JsonObject answer = new JsonObject(new String(removed.body()));
        assertThat(answer.getJsonArray("removed")).isEmpty();
        JsonArray replicas = answer.getJsonArray("replicas");
        assertThat(replicas).hasSize(2);
        String ownerUrl = "http://127.0.0.1:" + ports.get(ownerOf("blob " + layerDigest));
        assertThat(replicas.stream().map(JsonObject.class::cast)
                .filter(r -> r.getString("replica").equals(ownerUrl)).findFirst().orElseThrow()
                .getJsonArray("removed").getList()).containsExactly("blob");
        for (int i = 0; i < 3; i++) {
            assertThat(blobsOn(i)).doesNotContain(layerDigest.toString());
        }
        assertThat(call(runner, "DELETE", "/admin/digests/" + layerDigest, null).statusCode())
                .as("nothing left anywhere").isEqualTo(404);

        // Forgetting the repository's tags reaches every replica that kept one.
        assertThat(call((runner + 1) % 3, "DELETE", "/admin/repositories/docker.io/library/alpine", null).statusCode())
                .isEqualTo(200);
        for (int i = 0; i < 3; i++) {
            assertThat(call(i, "GET", "/admin/repositories/docker.io/library/alpine", null).statusCode())
                    .as("replica %d forgot the tags", i).isEqualTo(404);
        }

        // A forwarded removal that is not signed with the cluster's secret is refused.
        HttpResponse<byte[]> forged = http.send(HttpRequest.newBuilder(URI.create(at(0, "/admin/digests/" + all.get(0))))
                .header("X-Registry-Mirror-Hop", "t=" + (clock.instant().getEpochSecond()) + ",s=00")
                .DELETE().build(), HttpResponse.BodyHandlers.ofByteArray());
        assertThat(forged.statusCode()).isEqualTo(403);
    }
}
