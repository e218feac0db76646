package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import java.net.http.HttpResponse;
import org.junit.jupiter.api.Test;

/** Several upstreams in one instance, one of them over HTTPS with its own CA. */
class MultiUpstreamTest extends MirrorTestBase {
    private FakeHub ghcr;
    private boolean trustGhcr = true;

    @Override
    String upstreamsYaml() {
        if (ghcr == null) {
            ghcr = await(FakeHub.deploy(vertx, true));
        }
        return """
                upstreams:
                  - name: docker.io
                    url: %s
                  - name: ghcr.io
                    url: %s
                    connectTimeout: 2s
                %s""".formatted(hub.url(), ghcr.url(),
                trustGhcr ? "    caFile: " + ghcr.certificatePath() + "\n" : "");
    }

    @Test
    void requestsGoToTheUpstreamTheyName() {
        upstreamsYaml();
        Digest hubImage = hub.putImage("library/alpine", "1", randomBytes(100, 1));
        Digest ghcrImage = ghcr.putImage("owner/app", "1", randomBytes(100, 2));
        startMirror();

        HttpResponse<byte[]> byNs = get("/v2/owner/app/manifests/1?ns=ghcr.io", "Accept", TYPES);
        assertThat(byNs.statusCode()).isEqualTo(200);
        assertThat(byNs.headers().firstValue("Docker-Content-Digest")).contains(ghcrImage.toString());

        HttpResponse<byte[]> byPrefix = get("/v2/ghcr.io/owner/app/manifests/1", "Accept", TYPES);
        assertThat(byPrefix.headers().firstValue("Docker-Content-Digest")).contains(ghcrImage.toString());

        HttpResponse<byte[]> byDefault = get("/v2/alpine/manifests/1", "Accept", TYPES);
        assertThat(byDefault.headers().firstValue("Docker-Content-Digest")).contains(hubImage.toString());

        HttpResponse<byte[]> nsDocker = get("/v2/library/alpine/manifests/1?ns=docker.io", "Accept", TYPES);
        assertThat(nsDocker.statusCode()).isEqualTo(200);

        HttpResponse<byte[]> unknownNs = get("/v2/library/alpine/manifests/1?ns=quay.io", "Accept", TYPES);
        assertThat(unknownNs.statusCode()).isEqualTo(404);
        assertThat(body(unknownNs)).contains("quay.io");

        assertThat(hub.count("registry", "GET", "/owner/app/")).isZero();
        assertThat(ghcr.count("registry", "GET", "/library/alpine/")).isZero();

        // a ghcr.io blob goes through ghcr's TLS CDN redirect
        Digest layer = Digest.parse(new io.vertx.core.json.JsonObject(new String(byNs.body(),
                java.nio.charset.StandardCharsets.UTF_8)).getJsonArray("layers").getJsonObject(0).getString("digest"));
        HttpResponse<byte[]> blob = get("/v2/ghcr.io/owner/app/blobs/" + layer);
        assertThat(blob.statusCode()).isEqualTo(200);
        assertThat(Digest.of("sha256", blob.body())).isEqualTo(layer);
    }

    @Test
    void withoutTheCaFileTlsToASelfSignedUpstreamFailsClearly() {
        trustGhcr = false;
        upstreamsYaml();
        ghcr.putImage("owner/app", "1", randomBytes(100, 2));
        startMirror();
        HttpResponse<byte[]> r = get("/v2/owner/app/manifests/1?ns=ghcr.io", "Accept", TYPES);
        assertThat(r.statusCode()).isEqualTo(503);
        assertThat(body(r)).contains("ghcr.io");
        assertThat(ghcr.count("registry")).isZero();
    }
}
