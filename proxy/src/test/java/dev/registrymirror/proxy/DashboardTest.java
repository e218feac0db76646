package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The Grafana dashboard under docker/grafana/: every panel's query, and the upstream variable's,
 * is accepted by a real Prometheus (Debian's) scraping a mirror while images are pulled through it,
 * and returns data. The mirror is a cluster of one, so that the cluster's series exist.
 */
class DashboardTest extends MirrorTestBase {
    static final Path DASHBOARD = Path.of("..", "docker", "grafana", "registry-mirror.json");

    @TempDir
    Path work;
    final HttpClient http = HttpClient.newHttpClient();

    /** A cluster of one, so that the cluster's panels have their series too. */
    String cluster = "";

    @Override
    String topLevelYaml() {
        return cluster;
    }

    @Override
    String storageYaml() {
        return ", maxSize: 64MiB"; // so that the limit's series exists
    }

    @Test
    void everyPanelQueryReturnsDataFromARealPrometheus() throws Exception {
        JsonObject dashboard = new JsonObject(Files.readString(DASHBOARD));
        List<String> queries = new ArrayList<>();
        for (Object p : dashboard.getJsonArray("panels")) {
            for (Object t : ((JsonObject) p).getJsonArray("targets")) {
                queries.add(((JsonObject) t).getString("expr"));
            }
        }
        assertThat(queries).hasSizeGreaterThanOrEqualTo(23);
        JsonArray variables = dashboard.getJsonObject("templating").getJsonArray("list");
        assertThat(variables.stream().map(v -> ((JsonObject) v).getString("name"))).contains("datasource", "upstream");

        Digest layer = hub.putBlob(randomBytes(200_000, 1));
        hub.putImage("library/alpine", "3.19", randomBytes(5000, 2));
        minFree = "1MiB";
        cluster = clusterOfOne("dashboard");
        startMirror();
        // The hosted panels' series come from a second mirror: a cluster refuses hosted repositories.
        Mirror hostedMirror = startHostedMirror();
        int port = RealParts.freePort();
        Path config = Files.writeString(work.resolve("prometheus.yml"), """
                global: {scrape_interval: 1s, evaluation_interval: 1s}
                scrape_configs:
                  - job_name: registry-mirror
                    static_configs: [{targets: ["127.0.0.1:%d", "127.0.0.1:%d"]}]
                """.formatted(mirror.port(), hostedMirror.port()));
        Process prometheus = new ProcessBuilder(RealParts.require("prometheus"), "--config.file=" + config,
                "--storage.tsdb.path=" + work.resolve("tsdb"), "--web.listen-address=127.0.0.1:" + port)
                .redirectErrorStream(true).redirectOutput(work.resolve("prometheus.log").toFile()).start();
        try {
            String api = "http://127.0.0.1:" + port + "/api/v1/";
            awaitData(api, "up{job=\"registry-mirror\"} == 1");
            // Pulls while Prometheus scrapes: misses, hits, tag answers, over several scrapes.
            for (int round = 0; round < 4; round++) {
                assertThat(get("/v2/library/alpine/manifests/3.19").statusCode()).isEqualTo(200);
                assertThat(get("/v2/library/alpine/blobs/" + layer).statusCode()).isEqualTo(200);
                awaitData(api, "count(registrymirror_cache_hits_total) and on() (time() - timestamp(up) < 1)");
            }
            for (String q : queries) {
                String query = q.replace("$__rate_interval", "30s").replace("$upstream", ".*");
                awaitData(api, query);
            }
            String values = http.send(HttpRequest.newBuilder(URI.create(api + "label/upstream/values?match[]="
                    + URLEncoder.encode("registrymirror_upstream_requests_seconds_count", StandardCharsets.UTF_8)))
                    .build(), HttpResponse.BodyHandlers.ofString()).body();
            assertThat(new JsonObject(values).getJsonArray("data")).contains("docker.io");
        } finally {
            prometheus.destroy();
            prometheus.waitFor(20, TimeUnit.SECONDS);
        }
    }

    /** Polls Prometheus (another process, scraping each second) until {@code query} is accepted and has a result. */
    private void awaitData(String api, String query) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        String last = "";
        while (System.nanoTime() < deadline) {
            HttpResponse<String> r;
            try {
                r = http.send(HttpRequest.newBuilder(URI.create(api + "query?query="
                        + URLEncoder.encode(query, StandardCharsets.UTF_8))).build(), HttpResponse.BodyHandlers.ofString());
            } catch (java.net.ConnectException e) {
                Thread.sleep(100); // Prometheus is still starting
                continue;
            }
            last = r.body();
            JsonObject answer = new JsonObject(last);
            assertThat(answer.getString("status")).as("%s: %s", query, last).isEqualTo("success");
            if (!answer.getJsonObject("data").getJsonArray("result").isEmpty()) {
                return;
            }
            Thread.sleep(200); // polling another process
        }
        throw new AssertionError("no data within 30 s for " + query + ": " + last);
    }
}
