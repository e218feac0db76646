package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/**
 * The alert rules under docker/: valid for Prometheus (promtool), each alert with a unit test that
 * fires it, and every metric they name one that the mirror really exports.
 */
class AlertRulesTest extends MirrorTestBase {
    static final Path DOCKER = Path.of("..", "docker");
    String cluster = "";

    @Override
    String topLevelYaml() {
        return cluster;
    }

    @Test
    void theRulesAndThePrometheusConfigPassPromtool() throws Exception {
        assertThat(promtool("check", "config", DOCKER.resolve("prometheus.yml").toString())).contains("SUCCESS: 15 rules found");
        assertThat(promtool("test", "rules", DOCKER.resolve("alerts.test.yaml").toString())).contains("SUCCESS");
    }

    @Test
    void everyAlertHasATestThatFiresIt() throws Exception {
        String rules = Files.readString(DOCKER.resolve("alerts.yaml"));
        String tests = Files.readString(DOCKER.resolve("alerts.test.yaml"));
        Set<String> alerts = all(Pattern.compile("- alert: (\\w+)"), rules);
        assertThat(alerts).hasSize(15);
        for (String alert : alerts) {
            // a case that expects it firing: its alertname followed by a non-empty exp_alerts
            assertThat(Pattern.compile("alertname: " + alert + "\\s+exp_alerts:\\s+- exp_labels").matcher(tests).find())
                    .as("a test in alerts.test.yaml where %s fires", alert).isTrue();
        }
    }

    @Test
    void everyMetricTheRulesNameIsExported() throws Exception {
        Digest blob = hub.putBlob(randomBytes(10_000, 1));
        hub.putImage("library/alpine", "3.19", randomBytes(1000, 2));
        minFree = "1MiB"; // the default, as in production (the tests' base turns it off)
        cluster = clusterOfOne("alerts"); // the cluster's series exist only in a cluster
        startMirror();
        assertThat(get("/v2/library/alpine/manifests/3.19").statusCode()).isEqualTo(200); // rate-limit header
        assertThat(get("/v2/library/alpine/blobs/" + blob).statusCode()).isEqualTo(200);
        // Hosted repositories' series come from a mirror of their own: a cluster refuses hosted.
        String exposition = mirror.metrics().scrape() + startHostedMirror().metrics().scrape();
        Set<String> exported = all(Pattern.compile("(?m)^(registrymirror_\\w+)[{ ]"), exposition);
        Set<String> named = all(Pattern.compile("(registrymirror_\\w+)"), Files.readString(DOCKER.resolve("alerts.yaml")));
        assertThat(named).hasSizeGreaterThan(8);
        assertThat(exported).containsAll(named);
    }

    private static Set<String> all(Pattern p, String text) {
        Set<String> found = new TreeSet<>();
        Matcher m = p.matcher(text);
        while (m.find()) {
            found.add(m.group(1));
        }
        return found;
    }

    private static String promtool(String... args) throws Exception {
        String[] command = new String[args.length + 1];
        command[0] = RealParts.require("promtool");
        System.arraycopy(args, 0, command, 1, args.length);
        Process p = new ProcessBuilder(command).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.waitFor()).as(out).isZero();
        return out;
    }
}
