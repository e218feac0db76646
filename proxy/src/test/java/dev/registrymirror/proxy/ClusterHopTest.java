package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.HexFormat;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import org.junit.jupiter.api.Test;

/**
 * The internal hop as a replica receives it: answered from its own chain, never forwarded again,
 * whatever it thinks of ownership (so replicas whose views of the members differ cannot send a
 * request round between them); a hop for what a replica holds asks nothing of anybody; and only a
 * signature made with the cluster's secret, for that very request and within a minute, opens it.
 * The signature is computed here from the wire format (HMAC-SHA256 of "time method path", under a
 * key derived from the secret and the cluster's name), as another replica would.
 */
class ClusterHopTest extends ClusterTestBase {

    String sign(String method, String uri, long epochSeconds) throws Exception {
        Mac derive = Mac.getInstance("HmacSHA256");
        derive.init(new SecretKeySpec(SECRET.getBytes(StandardCharsets.UTF_8), "HmacSHA256"));
        byte[] key = derive.doFinal("registry-mirror cluster manifests hop".getBytes(StandardCharsets.UTF_8));
        Mac mac = Mac.getInstance("HmacSHA256");
        mac.init(new SecretKeySpec(key, "HmacSHA256"));
        byte[] s = mac.doFinal((epochSeconds + " " + method + " " + uri).getBytes(StandardCharsets.UTF_8));
        return "t=" + epochSeconds + ",s=" + HexFormat.of().formatHex(s);
    }

    HttpResponse<byte[]> hop(int replica, String uri) throws Exception {
        return get(replica, uri, "X-Registry-Mirror-Hop", sign("GET", uri, clock.instant().getEpochSecond()));
    }

    boolean holds(int replica, Digest d) {
        return Files.exists(storage.resolve("replica-" + replica).resolve("blobs/sha256").resolve(d.hex().substring(0, 2))
                .resolve(d.hex()));
    }

    @Test
    void aHopToAReplicaThatDoesNotOwnTheBlobIsAnsweredThereNotForwarded() throws Exception {
        byte[] layer = randomBytes(100_000, 5);
        Digest d = hub.putBlob(layer);
        int owner = ownerOf("blob " + d);
        int other = (owner + 1) % 3;
        String uri = "/v2/library/app/blobs/" + d + "?ns=docker.io";

        HttpResponse<byte[]> r = hop(other, uri);
        assertThat(r.statusCode()).isEqualTo(200);
        assertThat(r.body()).isEqualTo(layer);
        long deadline = System.nanoTime() + java.util.concurrent.TimeUnit.SECONDS.toNanos(10);
        while (!holds(other, d)) { // the commit follows the last byte sent
            assertThat(System.nanoTime()).as("the replica asked fetched and kept it itself").isLessThan(deadline);
            Thread.sleep(10);
        }
        assertThat(holds(owner, d)).as("it did not send the request on to the owner").isFalse();
        assertThat(hub.count("cdn", "GET", "/blobs/" + d)).isEqualTo(1);
    }

    @Test
    void aHopForWhatAReplicaHoldsAsksNobody() throws Exception {
        Digest d = hub.putBlob(randomBytes(50_000, 6));
        String uri = "/v2/library/app/blobs/" + d + "?ns=docker.io&held=1";
        for (int i = 0; i < 3; i++) {
            HttpResponse<byte[]> r = hop(i, uri);
            assertThat(r.statusCode()).isEqualTo(404);
            assertThat(new String(r.body(), StandardCharsets.UTF_8)).contains("BLOB_UNKNOWN");
        }
        assertThat(hub.count("cdn", "GET", "/blobs/" + d)).isZero();
        assertThat(hub.count("registry", "GET", "/blobs/" + d)).isZero();
    }

    @Test
    void aTagHopToAReplicaThatDoesNotOwnTheTagIsAnsweredThere() throws Exception {
        Digest m = hub.putManifest("library/app", "9.9", dev.registrymirror.proxy.manifest.MediaTypes.OCI_MANIFEST,
                "{\"schemaVersion\":2,\"config\":{},\"layers\":[]}".getBytes(StandardCharsets.UTF_8));
        int owner = ownerOf("tag docker.io/library/app:9.9");
        int other = (owner + 1) % 3;
        String uri = "/v2/library/app/manifests/9.9?ns=docker.io";
        HttpResponse<byte[]> r = get(other, uri, "Accept", TYPES, "X-Registry-Mirror-Hop",
                sign("GET", uri, clock.instant().getEpochSecond()));
        assertThat(r.statusCode()).isEqualTo(200);
        assertThat(r.headers().firstValue("Docker-Content-Digest")).contains(m.toString());
        assertThat(r.headers().firstValue("X-Registry-Mirror-Tag-Checked")).as("a hop learns when it was checked")
                .isPresent();
        // The owner was not asked: asked now as a client would, it goes upstream itself.
        long before = hub.seen("registry").stream().filter(s -> s.method().equals("GET")
                && s.path().endsWith("/manifests/9.9") && s.authorization() != null).count();
        assertThat(before).isEqualTo(1);
        assertThat(manifest(owner, "9.9").statusCode()).isEqualTo(200);
        assertThat(hub.seen("registry").stream().filter(s -> s.method().equals("GET")
                && s.path().endsWith("/manifests/9.9") && s.authorization() != null).count()).isEqualTo(2);
    }

    @Test
    void onlyASignatureForThatRequestWithinAMinuteOpensTheHop() throws Exception {
        Digest d = hub.putBlob(randomBytes(10_000, 7));
        String uri = "/v2/library/app/blobs/" + d + "?ns=docker.io";
        long now = clock.instant().getEpochSecond();
        String[] refused = {
                sign("GET", "/v2/library/other/blobs/" + d + "?ns=docker.io", now), // made for another request
                sign("HEAD", uri, now),                                            // another method
                sign("GET", uri, now - 120),                                       // too old
                sign("GET", uri, now + 120),                                       // from the future
                "t=" + now + ",s=" + "00".repeat(32),                              // not made with the secret
                "garbage",
        };
        for (String signature : refused) {
            HttpResponse<byte[]> r = get(0, uri, "X-Registry-Mirror-Hop", signature);
            assertThat(r.statusCode()).as(signature).isEqualTo(403);
            assertThat(new String(r.body(), StandardCharsets.UTF_8)).contains("DENIED");
        }
        assertThat(hub.count("cdn", "GET", "/blobs/" + d)).isZero();
        assertThat(hop(0, uri).statusCode()).isEqualTo(200);
    }
}
