package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The jar's start-up: bad configuration stops it clearly; an unreachable upstream does not. */
class StartupIT {
    @TempDir
    Path dir;

    @Test
    void aBadValueStopsStartUpNamingTheKeyAndTheValue() throws Exception {
        Path config = Files.writeString(dir.resolve("bad.yaml"), """
                upstreams:
                  - name: docker.io
                    url: https://registry-1.docker.io
                    manifestTtl: 5 minutes
                """);
        Process p = new ProcessBuilder(java(), "-jar", jar(), "--config", config.toString())
                .redirectErrorStream(true).start();
        assertThat(p.waitFor(30, TimeUnit.SECONDS)).isTrue();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.exitValue()).isEqualTo(2);
        assertThat(out).contains("upstreams[0].manifestTtl: \"5 minutes\" is not a duration");
    }

    @Test
    void itStartsAndAnswersWithEveryUpstreamDown() throws Exception {
        int port = RealParts.freePort();
        try (RealParts.Child mirror = RealParts.mirror(dir, port, "--storage", dir.resolve("data").toString(),
                "--upstream", "http://127.0.0.1:1")) {
            RealParts.awaitUp("http://127.0.0.1:" + port + "/v2/", mirror);
            String answer = RealParts.get("http://127.0.0.1:" + port + "/v2/library/alpine/manifests/3.19");
            assertThat(answer).contains("\"code\":\"UNAVAILABLE\"").contains("docker.io");
            assertThat(mirror.process.isAlive()).isTrue();
        }
    }

    @Test
    void aSecondMirrorOnTheSameFolderStopsWithAClearMessageAndTheFirstGoesOn() throws Exception {
        int port = RealParts.freePort();
        Path data = dir.resolve("data");
        try (RealParts.Child mirror = RealParts.mirror(dir, port, "--storage", data.toString(),
                "--upstream", "http://127.0.0.1:1")) {
            RealParts.awaitUp("http://127.0.0.1:" + port + "/v2/", mirror);
            Process second = new ProcessBuilder(java(), "-jar", jar(), "--port", String.valueOf(RealParts.freePort()),
                    "--storage", data.toString(), "--upstream", "http://127.0.0.1:1").redirectErrorStream(true).start();
            assertThat(second.waitFor(60, TimeUnit.SECONDS)).isTrue();
            String out = new String(second.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            assertThat(second.exitValue()).as(out).isEqualTo(1);
            assertThat(out).contains("is in use by another mirror process").contains("give each mirror its own storage.path");
            assertThat(RealParts.get("http://127.0.0.1:" + port + "/v2/")).isNotNull();
            assertThat(mirror.process.isAlive()).isTrue();
        }
    }

    @Test
    void aPortInUseStopsTheStartWithAMessageNamingTheKey() throws Exception {
        try (java.net.ServerSocket taken = new java.net.ServerSocket()) {
            taken.bind(new java.net.InetSocketAddress("0.0.0.0", RealParts.freePort()));
            int port = taken.getLocalPort();
            Process p = new ProcessBuilder(java(), "-jar", jar(), "--port", String.valueOf(port),
                    "--storage", dir.resolve("data").toString(), "--upstream", "http://127.0.0.1:1")
                    .redirectErrorStream(true).start();
            assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
            String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            assertThat(p.exitValue()).as(out).isEqualTo(1);
            assertThat(out).contains("registry-mirror: cannot start: server.port: " + port)
                    .contains("is already in use by another process").doesNotContain("BindException");
        }
    }

    private static String java() {
        return Path.of(System.getProperty("java.home"), "bin", "java").toString();
    }

    private static String jar() {
        return System.getProperty("mirror.jar", "target/registry-mirror.jar");
    }
}
