package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import ch.qos.logback.classic.spi.ILoggingEvent;
import dev.registrymirror.cache.Digest;
import java.net.http.HttpResponse;
import org.junit.jupiter.api.Test;

/**
 * An upstream that names a token realm elsewhere, redirects where no registry does, or answers
 * without end: the mirror keeps its credentials, its LAN and its memory to itself.
 */
class HostileUpstreamTest extends MirrorTestBase {
    private String extra = "";

    @Override
    String upstreamExtraYaml() {
        return extra;
    }

    private void withCredentials(String more) {
        hub.username = "alice";
        hub.password = "s3cret-pass";
        extra = "    username: alice\n    password: s3cret-pass\n" + more;
    }

    // ---------------------------------------------------------------- item 2: token realms

    @Test
    void credentialsAreNotSentToARealmOnAnotherHost() {
        withCredentials("");
        hub.realm = hub.tokenUrl("localhost"); // the same token server, but another host than the upstream's
        hub.putImage("library/alpine", "3.19", randomBytes(100, 1));
        startMirror();
        HttpResponse<byte[]> r = get("/v2/library/alpine/manifests/3.19", "Accept", TYPES);
        assertThat(r.statusCode()).isEqualTo(401);
        assertThat(body(r)).contains("\"code\":\"UNAUTHORIZED\"").contains(hub.realm).contains("trustedRealms");
        // Before, the configured username and password went to whatever realm the upstream named.
        assertThat(hub.count("auth")).isZero();
        assertThat(logged.list).extracting(ILoggingEvent::getFormattedMessage)
                .anyMatch(m -> m.contains("refused") && m.contains(hub.realm))
                .noneMatch(m -> m.contains("s3cret-pass"));
    }

    @Test
    void aRealmTheOperatorTrustsGetsTheCredentials() {
        withCredentials("    trustedRealms: [localhost]\n");
        hub.realm = hub.tokenUrl("localhost");
        hub.putImage("library/alpine", "3.19", randomBytes(100, 1));
        startMirror();
        assertThat(get("/v2/library/alpine/manifests/3.19", "Accept", TYPES).statusCode()).isEqualTo(200);
        assertThat(hub.seen("auth")).hasSize(1).allSatisfy(s -> assertThat(s.authorization()).startsWith("Basic "));
    }

    @Test
    void theUpstreamsOwnHostIsTrustedOnAnyPort() {
        withCredentials("");
        hub.putImage("library/alpine", "3.19", randomBytes(100, 1)); // realm: 127.0.0.1, the token server's port
        startMirror();
        assertThat(get("/v2/library/alpine/manifests/3.19", "Accept", TYPES).statusCode()).isEqualTo(200);
        assertThat(hub.seen("auth")).hasSize(1).allSatisfy(s -> assertThat(s.authorization()).startsWith("Basic "));
    }

    @Test
    void withoutCredentialsAnonymousTokensMayComeFromAnyRealm() {
        hub.realm = hub.tokenUrl("localhost");
        hub.putImage("library/alpine", "3.19", randomBytes(100, 1));
        startMirror();
        assertThat(get("/v2/library/alpine/manifests/3.19", "Accept", TYPES).statusCode()).isEqualTo(200);
        assertThat(hub.seen("auth")).hasSize(1).allSatisfy(s -> assertThat(s.authorization()).isNull());
    }

    // ---------------------------------------------------------------- item 3: redirects

    @Test
    void redirectsOfTagListsManifestsAndReferrersAreErrorsAndNeverFollowed() {
        Digest image = hub.putImage("library/alpine", "3.19", randomBytes(100, 1));
        hub.redirectOthersTo = hub.internalUrl() + "/v2/library/alpine/tags/list";
        startMirror();
        HttpResponse<byte[]> tags = get("/v2/library/alpine/tags/list");
        // Before, the internal server's answer was relayed to the client.
        assertThat(tags.statusCode()).isEqualTo(502);
        assertThat(body(tags)).doesNotContain("SECRET").contains("redirect");
        assertThat(get("/v2/library/alpine/manifests/3.19", "Accept", TYPES).statusCode()).isEqualTo(502);
        assertThat(get("/v2/library/alpine/manifests/" + image, "Accept", TYPES).statusCode()).isEqualTo(502);
        assertThat(get("/v2/library/alpine/referrers/" + image).statusCode()).isEqualTo(502);
        assertThat(hub.count("internal")).isZero();
        assertThat(mirror.metrics().scrape())
                .contains("registrymirror_upstream_errors_total{reason=\"protocol\",upstream=\"docker.io\"} 4.0");
    }

    @Test
    void blobRedirectsAreFollowedSinceTheirBytesAreVerified() {
        byte[] layer = randomBytes(5000, 2);
        Digest d = hub.putBlob(layer);
        startMirror();
        HttpResponse<byte[]> r = get("/v2/library/alpine/blobs/" + d);
        assertThat(r.statusCode()).isEqualTo(200);
        assertThat(r.body()).isEqualTo(layer);
        assertThat(hub.count("cdn", "GET", "/blobs/" + d)).isEqualTo(1);
    }

    // ---------------------------------------------------------------- item 4: bodies of unchecked size

    @Test
    void anEndlessTagListIsCutAtTheLimitWhileItIsRead() {
        hub.putImage("library/alpine", "3.19", randomBytes(100, 1));
        hub.tagsListBytes = 512L << 20; // chunked: no length announced
        startMirror();
        HttpResponse<byte[]> r = get("/v2/library/alpine/tags/list");
        assertThat(r.statusCode()).isEqualTo(502);
        assertThat(body(r)).contains("larger than");
        // Before, the whole body was read into memory and only then checked (a 600 MB list: OutOfMemoryErrors).
        assertThat(hub.streamedBytes.get()).isLessThan(64L << 20);
    }

    @Test
    void aTagListAnnouncedTooLargeIsRefusedBeforeItsBodyIsRead() {
        hub.putImage("library/alpine", "3.19", randomBytes(100, 1));
        hub.tagsListBytes = 512L << 20;
        hub.declareLength = true;
        startMirror();
        HttpResponse<byte[]> r = get("/v2/library/alpine/tags/list");
        assertThat(r.statusCode()).isEqualTo(502);
        assertThat(body(r)).contains("larger than");
        assertThat(hub.streamedBytes.get()).isLessThan(64L << 20);
    }

    @Test
    void anEndlessTokenAnswerIsCutAtTheLimit() {
        hub.putImage("library/alpine", "3.19", randomBytes(100, 1));
        hub.tokenBytes = 512L << 20;
        startMirror();
        HttpResponse<byte[]> r = get("/v2/library/alpine/manifests/3.19", "Accept", TYPES);
        assertThat(r.statusCode()).isEqualTo(502);
        assertThat(body(r)).contains("token");
        assertThat(hub.streamedBytes.get()).isLessThan(64L << 20);
    }
}
