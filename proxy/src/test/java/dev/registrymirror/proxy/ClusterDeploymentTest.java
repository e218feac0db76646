package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import com.fasterxml.jackson.dataformat.yaml.YAMLParser;
import dev.registrymirror.config.ConfigLoader;
import dev.registrymirror.config.MirrorConfig;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * The cluster's deployment files agree with themselves and with the mirror: each replica of
 * docker/cluster/compose.yaml loads the shared config.yaml with its own environment into a cluster
 * of the three (its URL the port haproxy.cfg sends to), and the Kubernetes manifests' config loads
 * with what the StatefulSet's pods are given, naming for discovery the headless Service that exists.
 * (scripts/cluster-check.sh runs the compose file's replicas for real.)
 */
class ClusterDeploymentTest {
    static final Path CLUSTER = Path.of("..", "docker", "cluster");
    static final Path KUBERNETES = Path.of("..", "docker", "kubernetes", "registry-mirror.yaml");
    static final String SECRET = "a-secret-of-at-least-thirty-two-characters";
    final ObjectMapper yaml = new ObjectMapper(new YAMLFactory());

    @Test
    void eachComposeReplicaLoadsTheConfigAsAMemberOfTheThree() throws Exception {
        ProcessBuilder pb = new ProcessBuilder(RealParts.require("docker-compose"), "-f",
                CLUSTER.resolve("compose.yaml").toString(), "config");
        pb.environment().put("MIRROR_CLUSTER_SECRET", SECRET);
        Process p = pb.start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        String err = new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
        assertThat(p.exitValue()).as(err).isZero();
        JsonNode services = yaml.readTree(out).get("services");
        assertThat(services.fieldNames()).toIterable()
                .containsExactlyInAnyOrder("replica-1", "replica-2", "replica-3", "haproxy");
        String config = Files.readString(CLUSTER.resolve("config.yaml"));
        String haproxy = Files.readString(CLUSTER.resolve("haproxy.cfg"));
        List<String> urls = new ArrayList<>();
        for (int i = 1; i <= 3; i++) {
            JsonNode replica = services.get("replica-" + i);
            assertThat(replica.get("network_mode").asText()).isEqualTo("host");
            Map<String, String> env = new HashMap<>();
            replica.get("environment").fields().forEachRemaining(e -> env.put(e.getKey(), e.getValue().asText()));
            assertThat(env).containsEntry("MIRROR_CLUSTER_SECRET", SECRET);
            MirrorConfig c = ConfigLoader.parse(config, env, ConfigLoader.Overrides.none());
            assertThat(c.server().port()).isEqualTo(Integer.parseInt(env.get("REGISTRY_MIRROR_PORT")));
            assertThat(c.cluster().url().toString()).isEqualTo("http://127.0.0.1:" + c.server().port());
            assertThat(c.cluster().members()).contains(c.cluster().bindHost() + ":" + c.cluster().bindPort())
                    .hasSize(3);
            assertThat(haproxy).contains("\"${MIRROR_HOST}:" + c.server().port() + "\"");
            urls.add(c.cluster().url().toString());
            assertThat(replica.get("volumes").toString()).contains("/var/lib/registry-mirror")
                    .contains("/etc/registry-mirror/config.yaml");
        }
        assertThat(urls).doesNotHaveDuplicates();
        assertThat(services.get("haproxy").get("volumes").toString()).contains("/usr/local/etc/haproxy/haproxy.cfg");
    }

    @Test
    void theKubernetesManifestsFitTogether() throws Exception {
        Map<String, JsonNode> byKindAndName = new HashMap<>();
        try (YAMLParser parser = new YAMLFactory().createParser(KUBERNETES.toFile())) {
            for (JsonNode doc : yaml.readValues(parser, JsonNode.class).readAll()) {
                byKindAndName.put(doc.get("kind").asText() + "/" + doc.at("/metadata/name").asText(), doc);
            }
        }
        assertThat(byKindAndName.keySet()).containsExactlyInAnyOrder("ConfigMap/registry-mirror",
                "Service/registry-mirror-members", "Service/registry-mirror", "StatefulSet/registry-mirror");
        JsonNode set = byKindAndName.get("StatefulSet/registry-mirror");
        JsonNode container = set.at("/spec/template/spec/containers/0");
        Map<String, String> env = new HashMap<>();
        for (JsonNode e : container.get("env")) {
            env.put(e.get("name").asText(), switch (e.get("name").asText()) {
                case "POD_IP" -> "10.0.0.5";
                case "POD_NAMESPACE" -> "mirrors";
                default -> SECRET;
            });
        }
        String config = byKindAndName.get("ConfigMap/registry-mirror").at("/data/config.yaml").asText();
        MirrorConfig c = ConfigLoader.parse(config, env, ConfigLoader.Overrides.none());
        assertThat(c.cluster().dns()).isEqualTo("registry-mirror-members.mirrors.svc.cluster.local");
        assertThat(c.cluster().url().toString()).isEqualTo("http://10.0.0.5:5000");
        assertThat(c.cluster().bindHost()).isEqualTo("10.0.0.5");

        JsonNode headless = byKindAndName.get("Service/registry-mirror-members");
        assertThat(headless.at("/spec/clusterIP").asText()).isEqualTo("None");
        assertThat(headless.at("/spec/publishNotReadyAddresses").asBoolean()).isTrue();
        assertThat(headless.at("/spec/ports/0/port").asInt()).isEqualTo(c.cluster().bindPort());
        assertThat(set.at("/spec/serviceName").asText()).isEqualTo("registry-mirror-members");
        String labels = set.at("/spec/template/metadata/labels").toString();
        assertThat(headless.at("/spec/selector").toString()).isEqualTo(labels);
        assertThat(byKindAndName.get("Service/registry-mirror").at("/spec/selector").toString()).isEqualTo(labels);
        assertThat(container.at("/ports/0/containerPort").asInt()).isEqualTo(c.server().port());
        assertThat(container.at("/volumeMounts/0/mountPath").asText()).isEqualTo(c.storage().path().toString());
        assertThat(set.at("/spec/volumeClaimTemplates/0/metadata/name").asText())
                .isEqualTo(container.at("/volumeMounts/0/name").asText());
        assertThat(container.at("/volumeMounts/1/mountPath").asText()).isEqualTo("/etc/registry-mirror");
    }
}
