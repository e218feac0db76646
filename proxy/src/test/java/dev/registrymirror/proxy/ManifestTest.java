package dev.registrymirror.proxy;

import dev.registrymirror.proxy.manifest.MediaTypes;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import io.vertx.core.Future;
import io.vertx.core.http.HttpClient;
import io.vertx.core.http.HttpClientOptions;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.RequestOptions;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

class ManifestTest extends MirrorTestBase {
    private static final String TAG = "/v2/library/alpine/manifests/3.19";

    @Test
    void tagIsServedFromCacheWithinTtlThenRevalidatedWithHead() {
        Digest d = hub.putImage("library/alpine", "3.19", randomBytes(1000, 1));
        startMirror();

        HttpResponse<byte[]> first = get(TAG, "Accept", TYPES);
        assertThat(first.statusCode()).isEqualTo(200);
        assertThat(first.headers().firstValue("Docker-Content-Digest")).contains(d.toString());
        assertThat(first.headers().firstValue("Content-Type")).contains(MediaTypes.OCI_MANIFEST);
        assertThat(Digest.of("sha256", first.body())).isEqualTo(d);
        assertThat(hub.count("registry", "GET", "/manifests/")).isEqualTo(2); // challenge + real
        assertThat(hub.rateRemaining.get()).isEqualTo(99);

        clock.advance(Duration.ofMinutes(4));
        assertThat(get(TAG, "Accept", TYPES).body()).isEqualTo(first.body());
        assertThat(head(TAG, "Accept", TYPES).statusCode()).isEqualTo(200);
        assertThat(hub.count("registry", "GET", "/manifests/")).isEqualTo(2);
        assertThat(hub.count("registry", "HEAD", "/manifests/")).isZero();

        clock.advance(Duration.ofMinutes(2));
        assertThat(get(TAG, "Accept", TYPES).body()).isEqualTo(first.body());
        assertThat(hub.count("registry", "HEAD", "/manifests/")).isEqualTo(1);
        assertThat(hub.count("registry", "GET", "/manifests/")).isEqualTo(2);
        assertThat(hub.rateRemaining.get()).isEqualTo(99);

        // Confirmed fresh again: no further upstream request for another TTL.
        get(TAG, "Accept", TYPES);
        assertThat(hub.count("registry", "HEAD", "/manifests/")).isEqualTo(1);
        assertThat(mirror.metrics().scrape())
                .contains("registrymirror_upstream_ratelimit_remaining{upstream=\"docker.io\"} 99.0");
    }

    @Test
    void aMovedTagIsFetchedAgainAfterTheTtl() {
        hub.putImage("library/alpine", "3.19", randomBytes(1000, 1));
        startMirror();
        byte[] before = get(TAG, "Accept", TYPES).body();
        Digest moved = hub.putImage("library/alpine", "3.19", randomBytes(1000, 2));

        assertThat(get(TAG, "Accept", TYPES).body()).isEqualTo(before);
        clock.advance(Duration.ofMinutes(6));
        HttpResponse<byte[]> after = get(TAG, "Accept", TYPES);
        assertThat(after.headers().firstValue("Docker-Content-Digest")).contains(moved.toString());
        assertThat(Digest.of("sha256", after.body())).isEqualTo(moved);
        assertThat(hub.count("registry", "HEAD", "/manifests/")).isEqualTo(1);
        assertThat(hub.count("registry", "GET", "/manifests/3.19")).isEqualTo(3);
    }

    @Test
    void anExpiredTagIsServedStaleWhenTheUpstreamSays429OrFailsOrIsDown() {
        Digest d = hub.putImage("library/alpine", "3.19", randomBytes(1000, 1));
        startMirror();
        byte[] cached = get(TAG, "Accept", TYPES).body();

        clock.advance(Duration.ofMinutes(6));
        hub.fault = FakeHub.Fault.STATUS_429;
        HttpResponse<byte[]> limited = get(TAG, "Accept", TYPES);
        assertThat(limited.statusCode()).isEqualTo(200);
        assertThat(limited.body()).isEqualTo(cached);

        hub.fault = FakeHub.Fault.STATUS_500;
        assertThat(get(TAG, "Accept", TYPES).body()).isEqualTo(cached);

        hub.fault = FakeHub.Fault.NONE;
        await(hub.stopRegistry());
        HttpResponse<byte[]> down = get(TAG, "Accept", TYPES);
        assertThat(down.statusCode()).isEqualTo(200);
        assertThat(down.headers().firstValue("Docker-Content-Digest")).contains(d.toString());

        String metrics = mirror.metrics().scrape();
        assertThat(metrics).contains("registrymirror_stale_served_total{reason=\"rate_limited\",upstream=\"docker.io\"} 1.0");
        assertThat(metrics).contains("registrymirror_stale_served_total{reason=\"error\",upstream=\"docker.io\"} 1.0");
        assertThat(metrics).contains("registrymirror_stale_served_total{reason=\"unreachable\",upstream=\"docker.io\"} 1.0");
    }

    @Test
    void aTagDeletedUpstreamIs404AfterTheTtl() {
        hub.putImage("library/alpine", "3.19", randomBytes(1000, 1));
        startMirror();
        get(TAG, "Accept", TYPES);
        hub.removeTag("library/alpine", "3.19");
        clock.advance(Duration.ofMinutes(6));
        HttpResponse<byte[]> gone = get(TAG, "Accept", TYPES);
        assertThat(gone.statusCode()).isEqualTo(404);
        assertThat(body(gone)).contains("MANIFEST_UNKNOWN");
    }

    @Test
    void tagAnswersSurviveARestartWithTheUpstreamDown() {
        Digest d = hub.putImage("library/alpine", "3.19", randomBytes(1000, 1));
        startMirror();
        byte[] cached = get(TAG, "Accept", TYPES).body();
        await(hub.stopRegistry());
        restartMirror();

        HttpResponse<byte[]> r = get(TAG, "Accept", TYPES);
        assertThat(r.statusCode()).isEqualTo(200);
        assertThat(r.body()).isEqualTo(cached);
        HttpResponse<byte[]> byDigest = get("/v2/library/alpine/manifests/" + d, "Accept", TYPES);
        assertThat(byDigest.body()).isEqualTo(cached);
    }

    @Test
    void manifestsByDigestAreImmutableAndNeverAskedAgain() {
        Digest d = hub.putImage("library/alpine", "3.19", randomBytes(1000, 1));
        startMirror();
        assertThat(get("/v2/library/alpine/manifests/" + d, "Accept", TYPES).statusCode()).isEqualTo(200);
        long asked = hub.count("registry", "GET", "/manifests/");
        clock.advance(Duration.ofDays(365));
        HttpResponse<byte[]> again = get("/v2/library/alpine/manifests/" + d, "Accept", TYPES);
        assertThat(again.statusCode()).isEqualTo(200);
        assertThat(hub.count("registry", "GET", "/manifests/")).isEqualTo(asked);
        assertThat(hub.count("registry", "HEAD", "/manifests/")).isZero();
    }

    @Test
    void aManifestWhoseBytesDoNotMatchItsDigestIsRefused() {
        byte[] real = "{\"schemaVersion\":2,\"a\":1}".getBytes(StandardCharsets.UTF_8);
        Digest claimed = Digest.of("sha256", "{\"schemaVersion\":2,\"a\":2}".getBytes(StandardCharsets.UTF_8));
        hub.putManifestUnder("library/alpine", claimed, MediaTypes.OCI_MANIFEST, real);
        startMirror();
        HttpResponse<byte[]> r = get("/v2/library/alpine/manifests/" + claimed, "Accept", TYPES);
        assertThat(r.statusCode()).isEqualTo(502);
        assertThat(body(r)).contains("do not match");
        assertThat(Exposition.value(mirror.metrics().scrape(),
                "registrymirror_upstream_errors_total{reason=\"digest_mismatch\",upstream=\"docker.io\"}")).isEqualTo(1.0);
    }

    @Test
    void anAnswerThatIsNotAManifestIsRefusedAndNotCached() {
        byte[] page = "<html><body>Welcome to the hotel wifi</body></html>".getBytes(StandardCharsets.UTF_8);
        hub.putManifest("library/alpine", "3.19", "text/html", page);
        startMirror();
        HttpResponse<byte[]> r = get(TAG, "Accept", TYPES);
        assertThat(r.statusCode()).isEqualTo(502);
        assertThat(body(r)).contains("not a manifest");
        Digest real = hub.putImage("library/alpine", "3.19", randomBytes(100, 1));
        HttpResponse<byte[]> fixed = get(TAG, "Accept", TYPES);
        assertThat(fixed.statusCode()).isEqualTo(200);
        assertThat(fixed.headers().firstValue("Docker-Content-Digest")).contains(real.toString());
    }

    @Test
    void headOnAnUncachedTagThenGetByDigestCostsOneUpstreamGet() {
        Digest d = hub.putImage("library/alpine", "3.19", randomBytes(1000, 1));
        startMirror();
        HttpResponse<byte[]> resolved = head(TAG, "Accept", TYPES);
        assertThat(resolved.statusCode()).isEqualTo(200);
        assertThat(resolved.headers().firstValue("Docker-Content-Digest")).contains(d.toString());
        assertThat(resolved.body()).isEmpty();
        assertThat(get("/v2/library/alpine/manifests/" + d + "?ns=docker.io", "Accept", TYPES).statusCode())
                .isEqualTo(200);
        assertThat(hub.rateRemaining.get()).isEqualTo(99);
    }

    @Test
    void onlyTypesTheClientAcceptsAreServed() {
        hub.putImage("library/alpine", "3.19", randomBytes(1000, 1));
        startMirror();
        assertThat(get(TAG).statusCode()).isEqualTo(200); // no Accept: anything goes
        HttpResponse<byte[]> refused = get(TAG, "Accept", MediaTypes.DOCKER_MANIFEST);
        assertThat(refused.statusCode()).isEqualTo(404);
        assertThat(body(refused)).contains("MANIFEST_UNKNOWN").contains("Accept");
        HttpResponse<byte[]> ok = get(TAG, "Accept", MediaTypes.DOCKER_MANIFEST, "Accept",
                MediaTypes.OCI_MANIFEST + ";q=0.9");
        assertThat(ok.statusCode()).isEqualTo(200);
    }

    @Test
    void concurrentMissesOnOneTagCostOneUpstreamGet() {
        hub.putImage("library/alpine", "3.19", randomBytes(1000, 1));
        hub.tokenDelayMillis = 200; // keep the first fetch in flight while the others arrive
        startMirror();
        HttpClient client = vertx.createHttpClient(new HttpClientOptions(), new io.vertx.core.http.PoolOptions().setHttp1MaxSize(10));
        List<Future<Integer>> all = new ArrayList<>();
        for (int i = 0; i < 10; i++) {
            all.add(client.request(new RequestOptions().setMethod(HttpMethod.GET).setHost("127.0.0.1")
                            .setPort(mirror.port()).setURI(TAG).putHeader("Accept", TYPES))
                    .compose(req -> req.send()).compose(resp -> resp.body().map(b -> resp.statusCode())));
        }
        for (Future<Integer> f : all) {
            assertThat(await(f)).isEqualTo(200);
        }
        assertThat(100 - hub.rateRemaining.get()).isEqualTo(1);
        await(client.close());
    }


    @Test
    void aManifestByDigestOfATypeTheClientExcludesIsRefusedWithoutAskingAgain() {
        Digest d = hub.putImage("library/alpine", "3.19", randomBytes(1000, 1));
        startMirror();
        String byDigest = "/v2/library/alpine/manifests/" + d;
        assertThat(get(byDigest, "Accept", TYPES).statusCode()).isEqualTo(200);
        long gets = hub.count("registry", "GET", "/manifests/" + d);
        for (int i = 0; i < 3; i++) {
            HttpResponse<byte[]> refused = get(byDigest, "Accept", MediaTypes.DOCKER_MANIFEST);
            assertThat(refused.statusCode()).isEqualTo(404);
            assertThat(body(refused)).contains("Accept");
        }
        // A digest names fixed bytes, so the upstream can only send the same type again: before, each of
        // these requests was a (rate-limited) GET upstream.
        assertThat(hub.count("registry", "GET", "/manifests/" + d)).isEqualTo(gets);
    }

    @Test
    void aRevalidationHeadWithoutTheDigestHeaderUsesTheEtagInsteadOfAGet() {
        hub.headWithoutDigest = true;
        hub.manifestEtag = true;
        hub.putImage("library/alpine", "3.19", randomBytes(1000, 1));
        startMirror();
        assertThat(get(TAG, "Accept", TYPES).statusCode()).isEqualTo(200);
        long gets = hub.count("registry", "GET", "/manifests/");
        for (int i = 1; i <= 3; i++) {
            clock.advance(Duration.ofMinutes(6));
            assertThat(get(TAG, "Accept", TYPES).statusCode()).isEqualTo(200);
            assertThat(hub.count("registry", "HEAD", "/manifests/3.19")).isEqualTo(i);
        }
        // Before, a HEAD without Docker-Content-Digest counted as "moved": a GET every TTL.
        assertThat(hub.count("registry", "GET", "/manifests/")).isEqualTo(gets);
        assertThat(mirror.metrics().scrape()).contains("registrymirror_cache_hits_total{kind=\"tag\"} 3.0");
    }

    @Test
    void withNeitherDigestNorEtagARevalidationIsOneGetAndStillAHit() {
        hub.headWithoutDigest = true;
        Digest d = hub.putImage("library/alpine", "3.19", randomBytes(1000, 1));
        startMirror();
        assertThat(get(TAG, "Accept", TYPES).statusCode()).isEqualTo(200);
        long gets = hub.count("registry", "GET", "/manifests/");
        clock.advance(Duration.ofMinutes(6));
        HttpResponse<byte[]> again = get(TAG, "Accept", TYPES);
        assertThat(again.headers().firstValue("Docker-Content-Digest")).hasValue(d.toString());
        // The HEAD told nothing, so the manifest is fetched, once; it had not moved: a revalidated hit.
        assertThat(hub.count("registry", "GET", "/manifests/")).isEqualTo(gets + 1);
        assertThat(mirror.metrics().scrape()).contains("registrymirror_cache_hits_total{kind=\"tag\"} 1.0");
        clock.advance(Duration.ofMinutes(6));
        Digest moved = hub.putImage("library/alpine", "3.19", randomBytes(1000, 2));
        assertThat(get(TAG, "Accept", TYPES).headers().firstValue("Docker-Content-Digest")).hasValue(moved.toString());
    }
}
