package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * docker/compose.yaml, as Debian's docker-compose reads it: the mirror, Prometheus with the alert
 * rules, Grafana with its data source and the dashboard, and every file it mounts present.
 */
class ComposeTest {
    static final Path COMPOSE = Path.of("..", "docker", "compose.yaml");

    @Test
    void composeAcceptsTheFileAndEveryMountedFileExists() throws Exception {
        Process p = new ProcessBuilder(RealParts.require("docker-compose"), "-f", COMPOSE.toString(), "config")
                .redirectErrorStream(false).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        String err = new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
        assertThat(p.exitValue()).as(err).isZero();
        JsonNode services = new ObjectMapper(new YAMLFactory()).readTree(out).get("services");
        assertThat(services.fieldNames()).toIterable().containsExactlyInAnyOrder("mirror", "prometheus", "grafana");

        assertThat(targets(services.get("prometheus"))).contains("/etc/prometheus/prometheus.yml", "/etc/prometheus/alerts.yaml");
        assertThat(targets(services.get("grafana"))).contains("/etc/grafana/provisioning",
                "/etc/grafana/dashboards/registry-mirror.json");
        for (String service : List.of("mirror", "prometheus", "grafana")) {
            for (JsonNode v : services.get(service).path("volumes")) {
                String source = v.asText().split(":")[0];
                if (source.startsWith("/")) {
                    assertThat(Path.of(source)).as("%s mounts %s", service, source).exists();
                }
            }
        }
        // What the mounts hold: the rules Prometheus is told to load, the data source Grafana provisions.
        assertThat(Files.readString(Path.of("..", "docker", "prometheus.yml"))).contains("alerts.yaml");
        assertThat(Files.readString(Path.of("..", "docker", "grafana", "provisioning", "datasources", "prometheus.yaml")))
                .contains("url: http://prometheus:9090");
        assertThat(Files.readString(Path.of("..", "docker", "grafana", "provisioning", "dashboards", "registry-mirror.yaml")))
                .contains("path: /etc/grafana/dashboards");
    }

    private static List<String> targets(JsonNode service) {
        List<String> targets = new ArrayList<>();
        for (JsonNode v : service.path("volumes")) {
            String[] parts = v.asText().split(":");
            targets.add(parts.length > 1 ? parts[1] : parts[0]);
        }
        return targets;
    }
}
