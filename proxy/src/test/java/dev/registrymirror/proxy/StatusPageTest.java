package dev.registrymirror.proxy;

import dev.registrymirror.proxy.operator.StatusPage;
import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import io.vertx.core.json.JsonObject;
import java.io.InputStream;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;

/** The status page's answers and its data, {@code /status.json}; {@link StatusPageBrowserTest} renders it. */
class StatusPageTest extends MirrorTestBase {

    @Test
    void aBrowserAskingForSlashGetsThePageAndRegistryClientsTodaysAnswer() {
        startMirror();
        HttpResponse<byte[]> page = get("/", "Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8");
        assertThat(page.statusCode()).isEqualTo(200);
        assertThat(page.headers().firstValue("Content-Type")).contains("text/html; charset=utf-8");
        assertThat(page.headers().firstValue("Content-Security-Policy")).contains(StatusPage.POLICY);
        assertThat(body(page)).contains("<script src=\"/status/status.js\" defer></script>");
        assertThat(get("/status").statusCode()).isEqualTo(200);
        assertThat(get("/status/status.js").headers().firstValue("Content-Type")).contains("application/javascript; charset=utf-8");
        assertThat(get("/status/status.css").headers().firstValue("Content-Type")).contains("text/css; charset=utf-8");

        for (String accept : new String[]{null, "application/json", "*/*"}) {
            HttpResponse<byte[]> r = accept == null ? get("/") : get("/", "Accept", accept);
            assertThat(r.headers().firstValue("Content-Type").orElse("")).as(accept).doesNotContain("text/html");
            assertThat(r.statusCode()).as(accept).isEqualTo(404);
        }
    }

    @Test
    void thePageLoadsNothingFromOtherHosts() throws Exception {
        for (String name : new String[]{"index.html", "status.js", "status.css"}) {
            String text;
            try (InputStream in = StatusPage.class.getResourceAsStream("/status/" + name)) {
                text = new String(in.readAllBytes(), StandardCharsets.UTF_8);
            }
            assertThat(text).as(name).doesNotContainPattern("(?i)(https?:)?//[a-z0-9.-]+\\.[a-z]{2,}")
                    .doesNotContainPattern("(?i)@import|url\\(");
        }
        assertThat(StatusPage.POLICY).contains("default-src 'none'").contains("script-src 'self'")
                .doesNotContain("unsafe-inline").doesNotContain("http");
    }

    @Test
    void theDataCountsHitsBytesPullsAndEachUpstreamsState() {
        byte[] layer = randomBytes(100_000, 31);
        hub.putImage("library/alpine", "3.19", layer);
        startMirror();
        JsonObject before = status();
        assertThat(before.getString("version")).isEqualTo(Mirror.VERSION)
                .as("the pom's version, written by the build").matches("\\d+\\.\\d+\\.\\d+(-SNAPSHOT)?");
        assertThat(before.getJsonObject("cache").getValue("hitRatio")).isNull();
        assertThat(before.getJsonArray("upstreams").getJsonObject(0).getString("state")).isEqualTo("unknown");

        String layerPath = "/v2/library/alpine/blobs/" + Digest.of("sha256", layer);
        assertThat(get("/v2/library/alpine/manifests/3.19", "Accept", TYPES).statusCode()).isEqualTo(200);
        assertThat(get(layerPath).statusCode()).isEqualTo(200);
        assertThat(hub.seen).as("every request upstream says who asks")
                .allMatch(seen -> ("registry-mirror/" + Mirror.VERSION).equals(seen.userAgent()));
        awaitTrue("the layer stored", () -> status().getJsonObject("storage").getLong("blobs") == 1);
        assertThat(get(layerPath).body()).isEqualTo(layer);
        assertThat(get("/v2/library/alpine/manifests/3.19", "Accept", TYPES).statusCode()).isEqualTo(200);

        JsonObject s = status();
        JsonObject cache = s.getJsonObject("cache");
        assertThat(cache.getLong("bytesFromCache")).isGreaterThanOrEqualTo(layer.length);
        assertThat(cache.getLong("bytesFromUpstream")).isGreaterThanOrEqualTo(layer.length);
        assertThat(cache.getDouble("hitRatio")).isEqualTo((double) cache.getLong("hits") / (cache.getLong("hits") + cache.getLong("misses")));
        assertThat(s.getJsonArray("topRepositories").getJsonObject(0))
                .isEqualTo(new JsonObject().put("name", "docker.io/library/alpine").put("pulls", 2));
        JsonObject up = s.getJsonArray("upstreams").getJsonObject(0);
        assertThat(up.getString("name")).isEqualTo("docker.io");
        assertThat(up.getString("state")).isEqualTo("up");
        assertThat(up.getString("lastAnswer")).isEqualTo(clock.instant().toString());
        assertThat(up.getLong("rateLimitRemaining")).isEqualTo(hub.rateRemaining.get());
        JsonObject storage = s.getJsonObject("storage");
        assertThat(storage.getLong("usedBytes")).isGreaterThan(layer.length);
        assertThat(storage.getValue("limitBytes")).isNull();
        assertThat(storage.getLong("freeBytes")).isPositive();

        hub.fault = FakeHub.Fault.STATUS_500;
        assertThat(get("/v2/library/alpine/manifests/3.20", "Accept", TYPES).statusCode()).isEqualTo(502);
        up = status().getJsonArray("upstreams").getJsonObject(0);
        assertThat(up.getString("state")).isEqualTo("failing");
        assertThat(up.getString("lastErrorMessage")).contains("answered 500");
        hub.fault = FakeHub.Fault.STATUS_429;
        assertThat(get("/v2/library/alpine/manifests/3.21", "Accept", TYPES).statusCode()).isEqualTo(429);
        assertThat(status().getJsonArray("upstreams").getJsonObject(0).getString("state")).isEqualTo("rate-limited");
        hub.fault = FakeHub.Fault.NONE;
        assertThat(get("/v2/library/alpine/manifests/3.22", "Accept", TYPES).statusCode()).isEqualTo(404);
        up = status().getJsonArray("upstreams").getJsonObject(0);
        assertThat(up.getString("state")).as("a 404 is an answer").isEqualTo("up");
        assertThat(up.getString("lastErrorMessage")).as("the last error stays shown").contains("429");
    }

    private JsonObject status() {
        HttpResponse<byte[]> r = get(StatusPage.JSON_PATH);
        assertThat(r.statusCode()).isEqualTo(200);
        assertThat(r.headers().firstValue("Cache-Control")).contains("no-store");
        return new JsonObject(body(r));
    }

}
