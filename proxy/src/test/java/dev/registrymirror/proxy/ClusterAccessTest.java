package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Access rules and provenance hold across the replicas of a cluster: a blob or manifest fetched for
 * a protected repository through one replica is not readable under another name through any replica,
 * though the bytes sit on one of them, and the protected name itself stays closed to anonymous clients
 * everywhere. The hop carries the client's name, and the owner decides with it.
 */
class ClusterAccessTest extends ClusterTestBase {
    Path htpasswd;

    @Override
    String topLevelYaml() {
        try {
            htpasswd = Files.writeString(storage.resolve("htpasswd"), AccessTest.entry("alice", AccessTest.ALICE_PW));
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
        return DownloadSharingTest.RULES.formatted(htpasswd); // alice's private/**, the rest anonymous
    }

    static String alice() {
        return "Basic " + java.util.Base64.getEncoder().encodeToString(("alice:" + AccessTest.ALICE_PW)
                .getBytes(StandardCharsets.UTF_8));
    }

    @org.junit.jupiter.api.Test
    void aPrivateBlobFetchedThroughOneReplicaIsNotReadableUnderAnotherNameThroughAny() throws Exception {
        byte[] layer = randomBytes(200_000, 3);
        Digest d = hub.putBlob(layer);
        hub.blobOnlyIn.put(d.toString(), "private/secret");
        int owner = ownerOf("blob " + d);
        int other = (owner + 1) % 3;

        // Alice pulls it through a replica that does not own it: the owner fetches and keeps it.
        HttpResponse<byte[]> hers = get(other, "/v2/private/secret/blobs/" + d, "Authorization", alice());
        assertThat(hers.statusCode()).isEqualTo(200);
        assertThat(hers.body()).isEqualTo(layer);

        for (int i = 0; i < 3; i++) {
            // Under a public name, through every replica: unknown (the upstream has no such blob there).
            HttpResponse<byte[]> r = get(i, "/v2/library/app/blobs/" + d);
            assertThat(r.statusCode()).as("replica %d under a public name", i).isEqualTo(404);
            assertThat(new String(r.body(), StandardCharsets.UTF_8)).contains("BLOB_UNKNOWN");
            HttpResponse<Void> h = http.send(java.net.http.HttpRequest.newBuilder(
                    java.net.URI.create(at(i, "/v2/library/app/blobs/" + d)))
                    .method("HEAD", java.net.http.HttpRequest.BodyPublishers.noBody()).build(),
                    HttpResponse.BodyHandlers.discarding());
            assertThat(h.statusCode()).as("replica %d, HEAD under a public name", i).isEqualTo(404);
            // Under its own name without credentials: refused, on every replica.
            assertThat(get(i, "/v2/private/secret/blobs/" + d).statusCode()).isEqualTo(401);
            // Alice, through any replica: served.
            assertThat(get(i, "/v2/private/secret/blobs/" + d, "Authorization", alice()).body()).isEqualTo(layer);
        }
        assertThat(hub.count("cdn", "GET", "/blobs/" + d)).as("fetched once for the cluster").isEqualTo(1);
    }
}
