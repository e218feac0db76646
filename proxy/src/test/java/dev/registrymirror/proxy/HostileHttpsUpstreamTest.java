package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import java.net.http.HttpResponse;
import org.junit.jupiter.api.Test;

/** An HTTPS upstream never makes the mirror speak plain HTTP on its behalf. */
class HostileHttpsUpstreamTest extends MirrorTestBase {

    @Override
    boolean useTls() {
        return true;
    }

    @Override
    String upstreamExtraYaml() {
        return "    caFile: " + hub.certificatePath() + "\n";
    }

    @Test
    void aPlainHttpRealmIsRefusedEvenForAnonymousTokens() {
        hub.putImage("library/alpine", "3.19", randomBytes(100, 1));
        hub.realm = hub.internalUrl() + "/token";
        startMirror();
        HttpResponse<byte[]> r = get("/v2/library/alpine/manifests/3.19", "Accept", TYPES);
        assertThat(r.statusCode()).isEqualTo(401);
        assertThat(body(r)).contains("UNAUTHORIZED").contains(hub.realm).contains("HTTPS");
        assertThat(hub.count("internal")).isZero();
    }

    @Test
    void aBlobRedirectFromHttpsToHttpIsNotFollowed() {
        Digest d = hub.putBlob(randomBytes(1000, 2));
        hub.blobLocation = hub.internalUrl() + "/blobs/" + d;
        startMirror();
        HttpResponse<byte[]> r = get("/v2/library/alpine/blobs/" + d);
        assertThat(r.statusCode()).isEqualTo(502);
        assertThat(body(r)).contains("https to http");
        assertThat(hub.count("internal")).isZero();
        assertThat(hub.count("cdn")).isZero();
    }

    @Test
    void httpsRedirectsAndRealmsWork() {
        byte[] layer = randomBytes(1000, 3);
        Digest d = hub.putBlob(layer);
        startMirror();
        assertThat(get("/v2/library/alpine/blobs/" + d).body()).isEqualTo(layer);
        assertThat(hub.count("cdn", "GET", "/blobs/" + d)).isEqualTo(1);
        assertThat(hub.count("auth")).isEqualTo(1);
    }
}
