package dev.registrymirror.proxy.route;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.registrymirror.config.ConfigLoader;
import dev.registrymirror.config.MirrorConfig;
import java.util.Map;
import org.junit.jupiter.api.Test;

class RouteParserTest {
    private static final String D = "sha256:" + "a".repeat(64);
    private final MirrorConfig config = ConfigLoader.parse("""
            upstreams:
              - {name: docker.io, url: 'https://registry-1.docker.io'}
              - {name: ghcr.io, url: 'https://ghcr.io'}
              - {name: 'lab.local:5000', url: 'http://10.0.0.5:5000'}
            """, Map.of(), ConfigLoader.Overrides.none());
    private final RouteParser parser = new RouteParser(config);

    @Test
    void picksTheUpstreamByNsThenPrefixThenDefault() {
        Route byNs = parser.parse("/v2/owner/app/manifests/1.0", "ghcr.io");
        assertThat(byNs.upstream().name()).isEqualTo("ghcr.io");
        assertThat(byNs.repository()).isEqualTo("owner/app");

        Route byPrefix = parser.parse("/v2/ghcr.io/owner/app/blobs/" + D, null);
        assertThat(byPrefix.upstream().name()).isEqualTo("ghcr.io");
        assertThat(byPrefix.repository()).isEqualTo("owner/app");
        assertThat(byPrefix.clientName()).isEqualTo("ghcr.io/owner/app");
        assertThat(byPrefix.digest().toString()).isEqualTo(D);

        Route withPort = parser.parse("/v2/lab.local:5000/team/tool/manifests/v1", null);
        assertThat(withPort.upstream().name()).isEqualTo("lab.local:5000");
        assertThat(withPort.repository()).isEqualTo("team/tool");

        Route byDefault = parser.parse("/v2/library/alpine/manifests/3.19", null);
        assertThat(byDefault.upstream().name()).isEqualTo("docker.io");
        assertThat(byDefault.tag()).isEqualTo("3.19");
    }

    @Test
    void oneComponentNamesGetLibraryOnDockerHubOnly() {
        assertThat(parser.parse("/v2/alpine/manifests/latest", null).repository()).isEqualTo("library/alpine");
        assertThat(parser.parse("/v2/alpine/manifests/latest", "docker.io").repository()).isEqualTo("library/alpine");
        assertThat(parser.parse("/v2/docker.io/alpine/manifests/latest", null).repository())
                .isEqualTo("library/alpine");
        assertThat(parser.parse("/v2/app/manifests/latest", "ghcr.io").repository()).isEqualTo("app");
    }

    @Test
    void otherEndpoints() {
        assertThat(parser.parse("/v2/", null).kind()).isEqualTo(Route.Kind.BASE);
        assertThat(parser.parse("/v2/a/b/tags/list", null).kind()).isEqualTo(Route.Kind.TAGS);
        assertThat(parser.parse("/v2/a/b/referrers/" + D, null).kind()).isEqualTo(Route.Kind.REFERRERS);
        // a repository may itself contain a component named like an endpoint
        Route tricky = parser.parse("/v2/a/manifests/b/manifests/v1", null);
        assertThat(tricky.repository()).isEqualTo("a/manifests/b");
        assertThat(tricky.tag()).isEqualTo("v1");
    }

    @Test
    void rejectsBadNamesTagsAndDigests() {
        assertCode("/v2/../etc/manifests/x", "NAME_INVALID");
        assertCode("/v2/a/../../etc/manifests/x", "NAME_INVALID");
        assertCode("/v2/%2e%2e/manifests/x", "NAME_INVALID");
        assertCode("/v2/a%2fb/manifests/x", "NAME_INVALID");
        assertCode("/v2/Alpine/manifests/x", "NAME_INVALID");
        assertCode("/v2/a//b/manifests/x", "NAME_INVALID");
        assertCode("/v2/-a/manifests/x", "NAME_INVALID");
        assertCode("/v2/" + "a".repeat(300) + "/manifests/x", "NAME_INVALID");
        // A manifest reference that is neither a tag nor a digest names no manifest: 404 (the spec's only
        // failure for manifest GET and HEAD; the conformance suite asks for .INVALID_MANIFEST_NAME).
        assertStatus("/v2/a/manifests/.INVALID_MANIFEST_NAME", 404, "MANIFEST_UNKNOWN");
        assertStatus("/v2/a/manifests/.hidden", 404, "MANIFEST_UNKNOWN");
        assertStatus("/v2/a/manifests/" + "t".repeat(129), 404, "MANIFEST_UNKNOWN");
        assertStatus("/v2/a/manifests/%2e%2e", 404, "MANIFEST_UNKNOWN");
        assertStatus("/v2/a/manifests/sha256:xyz", 404, "MANIFEST_UNKNOWN");
        assertStatus("/v2/a/referrers/sha256:xyz", 400, "DIGEST_INVALID");
        assertCode("/v2/a/blobs/sha256:" + "A".repeat(64), "DIGEST_INVALID");
        assertCode("/v2/a/blobs/md5:abc", "DIGEST_INVALID");
        assertCode("/v2/a/blobs/latest", "DIGEST_INVALID");
        assertCode("/v2/a/blobs/uploads/", "UNSUPPORTED");
        assertCode("/v2/a/nothing", "NAME_UNKNOWN");
        assertCode("/other", "NAME_UNKNOWN");
    }

    @Test
    void unknownNsIsNotSilentlySentToTheDefault() {
        assertThatThrownBy(() -> parser.parse("/v2/a/manifests/x", "quay.io"))
                .isInstanceOfSatisfying(RegistryError.class, e -> {
                    assertThat(e.status).isEqualTo(404);
                    assertThat(e.getMessage()).contains("quay.io");
                });
    }

    private void assertStatus(String path, int status, String code) {
        assertThatThrownBy(() -> parser.parse(path, null)).as(path)
                .isInstanceOfSatisfying(RegistryError.class, e -> {
                    assertThat(e.status).isEqualTo(status);
                    assertThat(e.code).isEqualTo(code);
                });
    }

    private void assertCode(String path, String code) {
        assertThatThrownBy(() -> parser.parse(path, null)).as(path)
                .isInstanceOfSatisfying(RegistryError.class, e -> assertThat(e.code).isEqualTo(code));
    }
}
