package dev.registrymirror.proxy;

import dev.registrymirror.proxy.manifest.MediaTypes;

import static org.assertj.core.api.Assertions.assertThat;

import ch.qos.logback.classic.spi.ILoggingEvent;
import dev.registrymirror.cache.Digest;
import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import org.junit.jupiter.api.Test;

/** Auth, error mapping and endpoints against the fake Docker Hub. */
class UpstreamBehaviourTest extends MirrorTestBase {
    private String credentials = "";

    @Override
    String upstreamExtraYaml() {
        return credentials;
    }

    @Test
    void baseEndpointIsLocal() {
        startMirror();
        HttpResponse<byte[]> r = get("/v2/");
        assertThat(r.statusCode()).isEqualTo(200);
        assertThat(body(r)).isEqualTo("{}");
        assertThat(r.headers().firstValue("Docker-Distribution-API-Version")).contains("registry/2.0");
        assertThat(hub.seen).isEmpty();
        // This client asks to upgrade to HTTP/2 (h2c); the mirror stays with HTTP/1.1.
        assertThat(http.version()).isEqualTo(java.net.http.HttpClient.Version.HTTP_2);
        assertThat(r.version()).isEqualTo(java.net.http.HttpClient.Version.HTTP_1_1);
    }

    @Test
    void pushesAndDeletesAre405Unsupported() {
        startMirror();
        for (String method : new String[] {"PUT", "POST", "PATCH", "DELETE"}) {
            HttpResponse<byte[]> r = send(HttpRequest.newBuilder(URI.create(url("/v2/library/alpine/manifests/x")))
                    .method(method, HttpRequest.BodyPublishers.ofString("{}")));
            assertThat(r.statusCode()).as(method).isEqualTo(405);
            assertThat(body(r)).contains("\"code\":\"UNSUPPORTED\"");
        }
        HttpResponse<byte[]> upload = send(HttpRequest.newBuilder(URI.create(url("/v2/library/alpine/blobs/uploads/")))
                .POST(HttpRequest.BodyPublishers.noBody()));
        assertThat(upload.statusCode()).isEqualTo(405);
        assertThat(hub.seen).isEmpty();
    }

    @Test
    void invalidInputIs400WithAnOciErrorBody() {
        startMirror();
        HttpResponse<byte[]> r = get("/v2/a/../../etc/manifests/passwd");
        assertThat(r.statusCode()).isEqualTo(400);
        assertThat(r.headers().firstValue("Content-Type")).contains("application/json");
        assertThat(body(r)).startsWith("{\"errors\":[{\"code\":\"NAME_INVALID\"");
        assertThat(get("/v2/library/alpine/manifests/bad!tag").statusCode()).isEqualTo(404); // names no manifest
        HttpResponse<byte[]> invalid = get("/v2/library/alpine/manifests/.INVALID_MANIFEST_NAME");
        assertThat(invalid.statusCode()).isEqualTo(404);
        assertThat(body(invalid)).contains("\"code\":\"MANIFEST_UNKNOWN\"");
        assertThat(head("/v2/library/alpine/manifests/.INVALID_MANIFEST_NAME").statusCode()).isEqualTo(404);
        assertThat(get("/v2/library/alpine/blobs/sha256:123").statusCode()).isEqualTo(400);
        assertThat(hub.seen).isEmpty();
    }

    @Test
    void tokensAreCachedPerScopeUntilShortlyBeforeExpiry() {
        Digest a = hub.putBlob(randomBytes(100, 1));
        Digest b = hub.putBlob(randomBytes(100, 2));
        Digest c = hub.putBlob(randomBytes(100, 3));
        startMirror();
        get("/v2/library/alpine/blobs/" + a);
        get("/v2/library/alpine/blobs/" + b);
        assertThat(hub.count("auth")).isEqualTo(1);
        get("/v2/library/busybox/blobs/" + a); // hit: no upstream at all
        assertThat(hub.count("auth")).isEqualTo(1);

        clock.advance(Duration.ofSeconds(300 - 31)); // still valid
        get("/v2/library/alpine/blobs/" + c);
        assertThat(hub.count("auth")).isEqualTo(1);
        clock.advance(Duration.ofSeconds(2)); // within the 30 s margin: renewed
        hub.putBlob(randomBytes(100, 4));
        get("/v2/library/alpine/blobs/" + Digest.of("sha256", randomBytes(100, 4)));
        assertThat(hub.count("auth")).isEqualTo(2);
        // after the first challenge the mirror asks for a token before the first request of a new repository
        long before = hub.count("registry");
        hub.putImage("library/redis", "7", randomBytes(10, 5));
        get("/v2/library/redis/manifests/7", "Accept", TYPES);
        assertThat(hub.count("registry") - before).isEqualTo(1);
    }

    @Test
    void configuredCredentialsGoToTheTokenServiceAndWrongOnesAreUnauthorized() {
        hub.username = "alice";
        hub.password = "right-password";
        credentials = "    username: alice\n    password: wrong-password\n";
        hub.putImage("library/alpine", "3.19", randomBytes(10, 1));
        startMirror();
        HttpResponse<byte[]> r = get("/v2/library/alpine/manifests/3.19", "Accept", TYPES);
        assertThat(r.statusCode()).isEqualTo(401);
        assertThat(body(r)).contains("\"code\":\"UNAUTHORIZED\"").contains("docker.io")
                .doesNotContain("wrong-password").doesNotContain("MANIFEST_UNKNOWN");
        assertThat(hub.seen("auth").get(0).authorization()).startsWith("Basic ");
        assertThat(logged.list).extracting(ILoggingEvent::getFormattedMessage)
                .noneMatch(m -> m.contains("wrong-password") || m.contains("tok-"));
    }

    @Test
    void rightCredentialsWork() {
        hub.username = "alice";
        hub.password = "right-password";
        credentials = "    username: alice\n    password: right-password\n";
        hub.putImage("library/alpine", "3.19", randomBytes(10, 1));
        startMirror();
        assertThat(get("/v2/library/alpine/manifests/3.19", "Accept", TYPES).statusCode()).isEqualTo(200);
    }

    @Test
    void basicAuthUpstreams() {
        hub.basicAuth = true;
        hub.username = "bob";
        hub.password = "pw";
        credentials = "    username: bob\n    password: pw\n";
        Digest d = hub.putBlob(randomBytes(1000, 1));
        hub.redirectBlobs = false;
        startMirror();
        assertThat(get("/v2/team/tool/blobs/" + d).statusCode()).isEqualTo(200);
        assertThat(hub.count("auth")).isZero();
    }

    @Test
    void upstream404And429AreMapped() {
        startMirror();
        HttpResponse<byte[]> missing = get("/v2/library/nope/manifests/1", "Accept", TYPES);
        assertThat(missing.statusCode()).isEqualTo(404);
        assertThat(body(missing)).contains("MANIFEST_UNKNOWN");

        hub.putImage("library/alpine", "3.19", randomBytes(10, 1));
        hub.rateRemaining.set(0);
        HttpResponse<byte[]> limited = get("/v2/library/alpine/manifests/3.19", "Accept", TYPES);
        assertThat(limited.statusCode()).isEqualTo(429);
        assertThat(body(limited)).contains("TOOMANYREQUESTS").contains("docker.io");
        assertThat(limited.headers().firstValue("Retry-After")).contains("3600");
    }

    @Test
    void withTheUpstreamDownTheMirrorStartsAndFailsUncachedRequestsQuickly() {
        await(hub.stopRegistry());
        startMirror();
        assertThat(get("/v2/").statusCode()).isEqualTo(200);
        long start = System.nanoTime();
        HttpResponse<byte[]> r = get("/v2/library/alpine/manifests/3.19", "Accept", TYPES);
        assertThat(r.statusCode()).isEqualTo(503);
        assertThat(body(r)).contains("\"code\":\"UNAVAILABLE\"").contains("docker.io");
        assertThat(Duration.ofNanos(System.nanoTime() - start)).isLessThan(Duration.ofSeconds(10));
        HttpResponse<byte[]> blob = get("/v2/library/alpine/blobs/sha256:" + "b".repeat(64));
        assertThat(blob.statusCode()).isEqualTo(503);
        assertThat(Exposition.value(mirror.metrics().scrape(),
                "registrymirror_upstream_errors_total{reason=\"connect\",upstream=\"docker.io\"}")).isPositive();
    }

    @Test
    void anUpstreamThatNeverAnswersTimesOut() {
        hub.fault = FakeHub.Fault.STALL_HEADERS;
        startMirror(); // idleTimeout: 2s
        HttpResponse<byte[]> r = get("/v2/library/alpine/manifests/3.19", "Accept", TYPES);
        assertThat(r.statusCode()).isEqualTo(503);
        assertThat(body(r)).contains("docker.io");
    }

    @Test
    void aSlowTokenServiceIsWaitedForWithinTheIdleTimeout() {
        hub.tokenDelayMillis = 500;
        hub.putImage("library/alpine", "3.19", randomBytes(10, 1));
        startMirror();
        assertThat(get("/v2/library/alpine/manifests/3.19", "Accept", TYPES).statusCode()).isEqualTo(200);
        hub.tokenDelayMillis = 5000;
        clock.advance(Duration.ofMinutes(10));
        hub.putImage("library/other", "1", randomBytes(10, 2));
        HttpResponse<byte[]> r = get("/v2/library/other/manifests/1", "Accept", TYPES);
        assertThat(r.statusCode()).isEqualTo(503);
    }

    @Test
    void tagsListIsPaginatedWithTheLinkRewrittenToTheClientsName() {
        for (String t : new String[] {"a", "b", "c"}) {
            hub.putImage("library/alpine", t, randomBytes(10, t.charAt(0)));
        }
        startMirror();
        HttpResponse<byte[]> page = get("/v2/alpine/tags/list?n=2");
        assertThat(page.statusCode()).isEqualTo(200);
        assertThat(body(page)).contains("\"tags\":[\"a\",\"b\"]");
        assertThat(page.headers().firstValue("Link")).contains("</v2/alpine/tags/list?n=2&last=b>; rel=\"next\"");
        HttpResponse<byte[]> next = get("/v2/alpine/tags/list?n=2&last=b");
        assertThat(body(next)).contains("\"tags\":[\"c\"]");
        assertThat(get("/v2/library/nothing/tags/list").statusCode()).isEqualTo(404);
    }

    @Test
    void aTagListTheUpstreamGaveIsServedAgainWhileItFailsOrIsDown() {
        for (String t : new String[] {"a", "b", "c"}) {
            hub.putImage("library/alpine", t, randomBytes(10, t.charAt(0)));
        }
        startMirror();
        HttpResponse<byte[]> fresh = get("/v2/alpine/tags/list?n=2");
        assertThat(fresh.statusCode()).isEqualTo(200);

        hub.fault = FakeHub.Fault.STATUS_500;
        for (int i = 0; i < 2; i++) {
            HttpResponse<byte[]> kept = get("/v2/alpine/tags/list?n=2");
            assertThat(kept.statusCode()).isEqualTo(200);
            assertThat(kept.body()).isEqualTo(fresh.body());
            assertThat(kept.headers().firstValue("Content-Type")).isEqualTo(fresh.headers().firstValue("Content-Type"));
            assertThat(kept.headers().firstValue("Link")).contains("</v2/alpine/tags/list?n=2&last=b>; rel=\"next\"");
        }
        // A list the upstream never gave is not made up.
        assertThat(get("/v2/alpine/tags/list").statusCode()).isEqualTo(502);

        hub.fault = FakeHub.Fault.NONE;
        await(hub.stopRegistry());
        HttpResponse<byte[]> down = get("/v2/alpine/tags/list?n=2");
        assertThat(down.statusCode()).isEqualTo(200);
        assertThat(down.body()).isEqualTo(fresh.body());
        String metrics = mirror.metrics().scrape();
        assertThat(metrics).contains("registrymirror_stale_served_total{reason=\"error\",upstream=\"docker.io\"} 2.0")
                .contains("registrymirror_stale_served_total{reason=\"unreachable\",upstream=\"docker.io\"} 1.0");

        // The upstream back: its answer again, including "not found", which no kept list hides.
        await(hub.restartRegistry());
        hub.putImage("library/alpine", "0", randomBytes(10, '0'));
        assertThat(body(get("/v2/alpine/tags/list?n=2"))).contains("\"tags\":[\"0\",\"a\"]");
        assertThat(get("/v2/library/nothing/tags/list").statusCode()).isEqualTo(404);
    }

    @Test
    void referrersOfAnUnknownSubjectAreAnEmptyIndex() {
        startMirror();
        HttpResponse<byte[]> r = get("/v2/library/alpine/referrers/sha256:" + "c".repeat(64));
        assertThat(r.statusCode()).isEqualTo(200);
        assertThat(r.headers().firstValue("Content-Type")).contains(MediaTypes.OCI_INDEX);
        assertThat(body(r)).contains("\"manifests\":[]");
    }
}
