package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import io.vertx.core.json.JsonObject;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.io.TempDir;

/**
 * End to end with real parts: CNCF Distribution as the upstream, images pushed into it with skopeo,
 * pulled with skopeo through the mirror running from its jar, compared by digest.
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class PullThroughIT {
    private static final Duration T = Duration.ofMinutes(3);

    @TempDir
    static Path work;
    static RealParts.Child registry;
    static RealParts.Child mirror;
    static String registryHost;
    static String mirrorHost;

    @BeforeAll
    static void start() throws Exception {
        RealParts.require("skopeo");
        int registryPort = RealParts.freePort();
        registryHost = "127.0.0.1:" + registryPort;
        registry = RealParts.registry(work.resolve("registry"), registryPort, null);
        RealParts.awaitUp("http://" + registryHost + "/v2/", registry);

        OciImages images = new OciImages(work.resolve("layout"));
        images.tag("single", images.image("amd64", images.layer("a.bin", 3 << 20, 1), images.layer("b.bin", 1000, 2)));
        images.tagIndex("multi", images.image("amd64", images.layer("x.bin", 200_000, 3)),
                images.image("arm64", images.layer("y.bin", 200_000, 4)));
        push(images.path(), "single", "library/e2e-single:1");
        push(images.path(), "multi", "library/e2e-multi:1");

        int mirrorPort = RealParts.freePort();
        mirrorHost = "127.0.0.1:" + mirrorPort;
        mirror = RealParts.mirror(work.resolve("mirror"), mirrorPort, "--storage",
                work.resolve("mirror/data").toString(), "--upstream", "http://" + registryHost);
        RealParts.awaitUp("http://" + mirrorHost + "/v2/", mirror);
    }

    @AfterAll
    static void stop() throws Exception {
        if (mirror != null) {
            mirror.close();
        }
        if (registry != null) {
            registry.close();
        }
    }

    private static void push(Path layout, String tag, String ref) throws Exception {
        skopeo("copy", "--all", "--dest-tls-verify=false", "oci:" + layout + ":" + tag,
                "docker://" + registryHost + "/" + ref);
    }

    private static String skopeo(String... args) throws Exception {
        String[] command = new String[args.length + 3];
        command[0] = RealParts.require("skopeo");
        command[1] = "--insecure-policy";
        command[2] = "--command-timeout=120s";
        System.arraycopy(args, 0, command, 3, args.length);
        return RealParts.run(T, command);
    }

    private static byte[] raw(String host, String ref) throws Exception {
        return skopeo("inspect", "--raw", "--tls-verify=false", "docker://" + host + "/" + ref)
                .getBytes(StandardCharsets.UTF_8);
    }

    @Test
    @Order(1)
    void singleAndMultiArchImagesPullThroughWithDigestsIntact() throws Exception {
        for (String ref : new String[] {"library/e2e-single:1", "library/e2e-multi:1"}) {
            Path out = work.resolve("pulled-" + ref.replaceAll("[/:]", "_"));
            skopeo("copy", "--all", "--src-tls-verify=false", "docker://" + mirrorHost + "/" + ref, "oci:" + out + ":x");
            assertThat(raw(mirrorHost, ref)).as(ref).isEqualTo(raw(registryHost, ref));
            JsonObject index = new JsonObject(Files.readString(out.resolve("index.json")));
            String pulled = index.getJsonArray("manifests").getJsonObject(0).getString("digest");
            assertThat(pulled).isEqualTo(Digest.of("sha256", raw(registryHost, ref)).toString());
        }
        // one-component names mean library/ on docker.io, the default upstream
        assertThat(raw(mirrorHost, "e2e-single:1")).isEqualTo(raw(registryHost, "library/e2e-single:1"));
    }

    @Test
    @Order(2)
    void aSecondPullFetchesNoBlobFromTheUpstream() throws Exception {
        double before = metric("registrymirror_upstream_requests_seconds_count", "kind=\"blob\"");
        double hitsBefore = metric("registrymirror_cache_hits_total", "kind=\"blob\"");
        skopeo("copy", "--all", "--src-tls-verify=false", "docker://" + mirrorHost + "/library/e2e-multi:1",
                "oci:" + work.resolve("again") + ":x");
        assertThat(metric("registrymirror_upstream_requests_seconds_count", "kind=\"blob\"")).isEqualTo(before);
        assertThat(metric("registrymirror_cache_hits_total", "kind=\"blob\"")).isGreaterThan(hitsBefore);
    }

    @Test
    @Order(3)
    void metricsPassPromtool() throws Exception {
        Path scraped = work.resolve("metrics.txt");
        Files.writeString(scraped, RealParts.get("http://" + mirrorHost + "/metrics"));
        Process p = new ProcessBuilder(RealParts.require("promtool"), "check", "metrics")
                .redirectInput(scraped.toFile()).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.waitFor()).as(out).isZero();
    }

    @Test
    @Order(4)
    void withTheUpstreamGoneCachedImagesStillPull() throws Exception {
        registry.close();
        skopeo("copy", "--all", "--src-tls-verify=false", "docker://" + mirrorHost + "/library/e2e-multi:1",
                "oci:" + work.resolve("offline") + ":x");
        assertThat(mirror.process.isAlive()).isTrue();
    }

    private static double metric(String name, String label) throws Exception {
        String text = RealParts.get("http://" + mirrorHost + "/metrics");
        double sum = 0;
        Matcher m = Pattern.compile("(?m)^" + name + "\\{([^}]*)} (\\S+)$").matcher(text);
        while (m.find()) {
            if (m.group(1).contains(label)) {
                sum += Double.parseDouble(m.group(2));
            }
        }
        return sum;
    }
}
