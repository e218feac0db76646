package dev.registrymirror.config;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ConfigLoaderTest {
    private static final ConfigLoader.Overrides NONE = ConfigLoader.Overrides.none();

    @Test
    void hostedRepositories() {
        MirrorConfig c = ConfigLoader.parse("""
                hosted:
                  repositories: ["team/**", "ci/*"]
                  maxSize: 100GiB
                  delete: true
                """, Map.of(), NONE);
        assertThat(c.hosted().maxSize()).isEqualTo(100L << 30);
        assertThat(c.hosted().delete()).isTrue();
        assertThat(c.hosted().uploadExpiry()).isEqualTo(Duration.ofHours(24));
        assertThat(c.hosted().gcGrace()).isEqualTo(Duration.ofHours(1));
        assertThat(c.isHosted("team/app")).isTrue();
        assertThat(c.isHosted("team/a/b")).isTrue();
        assertThat(c.isHosted("ci/app")).isTrue();
        assertThat(c.isHosted("ci/a/b")).isFalse();
        assertThat(c.isHosted("teams/app")).isFalse();
        assertThat(c.isHosted("library/alpine")).isFalse();

        MirrorConfig none = ConfigLoader.load(null, Map.of(), NONE);
        assertThat(none.hosted()).isNull();
        assertThat(none.isHosted("team/app")).isFalse();
        MirrorConfig defaults = ConfigLoader.parse("hosted: {repositories: [team/**]}", Map.of(), NONE);
        assertThat(defaults.hosted().delete()).isFalse();
        assertThat(defaults.hosted().maxSize()).isZero();

        // Rules name hosted repositories as clients push them, with who may push.
        MirrorConfig ruled = ConfigLoader.parse("""
                hosted: {repositories: ["team/**"]}
                access:
                  rules:
                    - {repositories: ["team/app", "team/*"], pull: [anonymous], push: [alice]}
                    - {repositories: ["**"], pull: [anonymous]}
                """, Map.of(), NONE);
        assertThat(ruled.access().rules().get(0).push()).containsExactly("alice");
        assertThat(ruled.access().rules().get(1).push()).isEmpty();
    }

    @Test
    void badHostedRepositoriesNameTheKey() {
        assertError("hosted: {maxSize: 1GiB}", "hosted.repositories: required");
        assertError("hosted: {repositories: []}", "hosted.repositories: required");
        assertError("hosted: {repositories: [team/**, 'Team/App']}",
                "hosted.repositories[1]: \"Team/App\" is not a repository glob");
        assertError("hosted: {repositories: [team/]}", "hosted.repositories[0]: \"team/\" is not a repository glob");
        assertError("hosted: {repositories: ['**']}",
                "hosted.repositories[0]: \"**\" names upstream docker.io, whose repositories are pulled through it");
        assertError("hosted: {repositories: [docker.io/team/*]}", "hosted.repositories[0]: \"docker.io/team/*\" names upstream docker.io");
        assertError("hosted: {repositories: [team/**], maxSize: lots}", "hosted.maxSize: \"lots\" is not a size");
        assertError("hosted: {repositories: [team/**], delete: maybe}", "hosted.delete:");
        assertError("hosted: {repositories: [team/**], uploadExpiry: 10s}",
                "hosted.uploadExpiry: \"10s\" is too short (at least 1m");
        assertError("hosted: {repositories: [team/**], expiry: 1h}", "hosted.expiry: unknown key");
        assertError("hosted: {repositories: [team/**], gcGrace: 1m}", "hosted.gcGrace: \"1m\" is too short");
        assertError("hosted: {repositories: [team/**]}\ncluster: {name: lan, secret: 'a-secret-of-at-least-thirty-two-characters',"
                + " bind: '127.0.0.1:7800', members: ['127.0.0.1:7800'], url: 'http://127.0.0.1:5000'}",
                "hosted: not available with cluster yet");
    }

    @Test
    void noFileMeansDefaults() {
        MirrorConfig c = ConfigLoader.load(null, Map.of(), NONE);
        assertThat(c.server().port()).isEqualTo(5000);
        assertThat(c.storage().path()).isEqualTo(Path.of("./data"));
        assertThat(c.upstreams()).hasSize(1);
        assertThat(c.defaultUpstream().name()).isEqualTo("docker.io");
        assertThat(c.defaultUpstream().url()).isEqualTo(URI.create("https://registry-1.docker.io"));
        assertThat(c.defaultUpstream().manifestTtl()).isEqualTo(Duration.ofMinutes(5));
    }

    @Test
    void fullFileIsRead(@TempDir Path dir) throws Exception {
        Path ca = Files.writeString(dir.resolve("ca.pem"), "x");
        Path file = Files.writeString(dir.resolve("c.yaml"), """
                server:
                  port: 5050
                storage:
                  path: /var/cache/mirror
                upstreams:
                  - name: docker.io
                    url: https://registry-1.docker.io/
                    username: alice
                    password: ${HUB_TOKEN}
                    manifestTtl: 1h30m
                  - name: lab.local:5000
                    url: http://10.0.0.5:5000
                    caFile: %s
                    connectTimeout: 2s
                    idleTimeout: 250ms
                """.formatted(ca));
        MirrorConfig c = ConfigLoader.load(file, Map.of("HUB_TOKEN", "s3cret"), NONE);
        assertThat(c.server().port()).isEqualTo(5050);
        assertThat(c.storage().path()).isEqualTo(Path.of("/var/cache/mirror"));
        MirrorConfig.Upstream hub = c.defaultUpstream();
        assertThat(hub.url()).isEqualTo(URI.create("https://registry-1.docker.io"));
        assertThat(hub.password()).isEqualTo("s3cret");
        assertThat(hub.manifestTtl()).isEqualTo(Duration.ofMinutes(90));
        assertThat(hub.toString()).doesNotContain("s3cret");
        MirrorConfig.Upstream lab = c.upstream("lab.local:5000").orElseThrow();
        assertThat(lab.caFile()).isEqualTo(ca);
        assertThat(lab.connectTimeout()).isEqualTo(Duration.ofSeconds(2));
        assertThat(lab.idleTimeout()).isEqualTo(Duration.ofMillis(250));
        assertThat(lab.manifestTtl()).isEqualTo(Duration.ofMinutes(5));
    }

    @Test
    void cliBeatsEnvBeatsFile() {
        String yaml = "server: {port: 6000}\nstorage: {path: /a}\n";
        MirrorConfig fileOnly = ConfigLoader.parse(yaml, Map.of(), NONE);
        assertThat(fileOnly.server().port()).isEqualTo(6000);

        Map<String, String> env = Map.of("REGISTRY_MIRROR_PORT", "7000", "REGISTRY_MIRROR_STORAGE", "/b",
                "REGISTRY_MIRROR_UPSTREAM", "http://127.0.0.1:9000");
        MirrorConfig withEnv = ConfigLoader.parse(yaml, env, NONE);
        assertThat(withEnv.server().port()).isEqualTo(7000);
        assertThat(withEnv.storage().path()).isEqualTo(Path.of("/b"));
        assertThat(withEnv.defaultUpstream().url()).isEqualTo(URI.create("http://127.0.0.1:9000"));

        MirrorConfig withCli = ConfigLoader.parse(yaml, env,
                new ConfigLoader.Overrides(8000, "/c", "https://mirror.example:8443"));
        assertThat(withCli.server().port()).isEqualTo(8000);
        assertThat(withCli.storage().path()).isEqualTo(Path.of("/c"));
        assertThat(withCli.defaultUpstream().url()).isEqualTo(URI.create("https://mirror.example:8443"));
        assertThat(withCli.defaultUpstream().name()).isEqualTo("docker.io");
    }

    @Test
    void badValuesNameKeyAndValue() {
        assertError("server: {port: 70000}", "server.port: \"70000\" is not a port number (1-65535, or 0 for any free port)");
        assertError("server: {port: abc}", "server.port: \"abc\" is not a whole number");
        assertError("upstreams: [{name: x.io, url: ftp://x}]",
                "upstreams[0].url: \"ftp://x\" must be an http:// or https:// URL with a host");
        assertError("upstreams: [{name: x.io, url: 'http://u:p@x'}]", "upstreams[0].url: credentials do not belong");
        assertError("upstreams: [{name: x.io, url: 'http://x', manifestTtl: 5 minutes}]",
                "upstreams[0].manifestTtl: \"5 minutes\" is not a duration");
        assertError("upstreams: [{name: x.io, url: 'http://x', idleTimeout: 0s}]",
                "upstreams[0].idleTimeout: \"0s\" must be more than zero");
        assertError("upstreams: [{url: 'http://x'}]", "upstreams[0].name: is required");
        assertError("upstreams: [{name: 'Bad Name', url: 'http://x'}]", "upstreams[0].name: \"Bad Name\" is not");
        assertError("upstreams: [{name: a.io, url: 'http://x', username: bob}]", "upstreams[0].password: is required");
        assertError("upstreams: [{name: a.io, url: 'http://x'}, {name: a.io, url: 'http://y'}]",
                "upstreams[1].name: \"a.io\" is used by an earlier upstream");
        assertError("upstreams: []", "upstreams: at least one upstream is required");
        assertError("storage: {paht: /x}", "storage.paht: unknown key");
        assertError("upstreams: [{name: a.io, url: 'http://x', password: '${NOPE}', username: u}]",
                "upstreams[0].password: refers to environment variable NOPE, which is not set");
        assertError("upstreams: [{name: a.io, url: 'http://x', caFile: /no/such.pem}]",
                "upstreams[0].caFile: \"/no/such.pem\" is not a readable file");
        assertError("server: [1, 2]", "server: must be a mapping");
        assertError("server: {port: [1]}", "server.port: must be a single value");
        assertError("server: {port: 1", "config is not valid YAML");
    }

    @Test
    void badEnvAndCliValuesNameTheirSource() {
        assertThatThrownBy(() -> ConfigLoader.parse("", Map.of("REGISTRY_MIRROR_PORT", "x"), NONE))
                .hasMessage("REGISTRY_MIRROR_PORT: \"x\" is not a port number");
        assertThatThrownBy(() -> ConfigLoader.parse("", Map.of(), new ConfigLoader.Overrides(null, null, "nope")))
                .hasMessageStartingWith("--upstream: \"nope\" must be an http:// or https:// URL");
        assertThatThrownBy(() -> ConfigLoader.parse("", Map.of(), new ConfigLoader.Overrides(-1, null, null)))
                .hasMessageStartingWith("--port: \"-1\" is not a port number");
    }

    @Test
    void missingFileIsAClearError(@TempDir Path dir) {
        assertThatThrownBy(() -> ConfigLoader.load(dir.resolve("nope.yaml"), Map.of(), NONE))
                .isInstanceOf(ConfigException.class)
                .hasMessageContaining("nope.yaml does not exist");
    }

    private static void assertError(String yaml, String messageStart) {
        assertThatThrownBy(() -> ConfigLoader.parse(yaml, Map.of(), NONE))
                .isInstanceOf(ConfigException.class)
                .hasMessageStartingWith(messageStart);
    }

    @Test
    void storageLimitsRetriesAndShutdownAreRead() {
        MirrorConfig c = ConfigLoader.parse("""
                server: {shutdownTimeout: 45s, downloadMemory: 64MiB}
                storage: {path: /data, maxSize: 50GiB, maxAge: 30d, minFree: 5GiB}
                upstreams:
                  - {name: docker.io, url: "https://registry-1.docker.io", retries: 4, retryBackoff: 1s}
                """, Map.of(), NONE);
        assertThat(c.server().shutdownTimeout()).isEqualTo(Duration.ofSeconds(45));
        assertThat(c.server().downloadMemory()).isEqualTo(64L << 20);
        assertThat(c.storage().maxSize()).isEqualTo(50L << 30);
        assertThat(c.storage().lowWatermark()).isEqualTo((50L << 30) - (5L << 30));
        assertThat(c.storage().maxAge()).isEqualTo(Duration.ofDays(30));
        assertThat(c.storage().minFree()).isEqualTo(5L << 30);
        assertThat(c.defaultUpstream().retries()).isEqualTo(4);
        assertThat(c.defaultUpstream().retryBackoff()).isEqualTo(Duration.ofSeconds(1));

        MirrorConfig defaults = ConfigLoader.load(null, Map.of(), NONE);
        assertThat(defaults.storage().maxSize()).isZero();
        assertThat(defaults.storage().maxAge()).isNull();
        assertThat(defaults.storage().minFree()).isEqualTo(1L << 30);
        assertThat(ConfigLoader.parse("storage: {minFree: 0}", Map.of(), NONE).storage().minFree()).isZero();
        assertThat(defaults.defaultUpstream().retries()).isEqualTo(2);
        assertThat(defaults.server().shutdownTimeout()).isEqualTo(Duration.ofSeconds(20));
        assertThat(defaults.server().downloadMemory()).isEqualTo(-1);
        assertThat(ConfigLoader.parse("server: {downloadMemory: 0}", Map.of(), NONE).server().downloadMemory()).isZero();
    }

    @Test
    void badStorageAndRetryValuesNameTheKey() {
        assertThatThrownBy(() -> ConfigLoader.parse("server: {downloadMemory: lots}", Map.of(), NONE))
                .hasMessage("server.downloadMemory: \"lots\" is not a size (use e.g. 50GiB, 512MiB)");
        assertThatThrownBy(() -> ConfigLoader.parse("storage: {maxSize: 50GB}", Map.of(), NONE))
                .hasMessage("storage.maxSize: \"50GB\" is not a size (use e.g. 50GiB, 512MiB)");
        assertThatThrownBy(() -> ConfigLoader.parse("storage: {maxSize: 1MiB}", Map.of(), NONE))
                .hasMessageStartingWith("storage.maxSize: \"1MiB\" is too small");
        assertThatThrownBy(() -> ConfigLoader.parse("storage: {minFree: 10%}", Map.of(), NONE))
                .hasMessage("storage.minFree: \"10%\" is not a size (use e.g. 50GiB, 512MiB)");
        assertThatThrownBy(() -> ConfigLoader.parse("storage: {maxAge: 10m}", Map.of(), NONE))
                .hasMessageStartingWith("storage.maxAge: \"10m\" is too short");
        assertThatThrownBy(() -> ConfigLoader.parse(
                "upstreams: [{name: docker.io, url: \"http://h\", retries: 11}]", Map.of(), NONE))
                .hasMessage("upstreams[0].retries: \"11\" must be between 0 and 10");
    }

    @Test
    void connectionLimitsEventLoopsBlobSizeAndRealmsAreRead() {
        MirrorConfig c = ConfigLoader.parse("""
                server: {eventLoops: 6, headerTimeout: 10s, keepAliveTimeout: 30s, maxConnections: 5000,
                         maxConnectionsPerClient: 64}
                storage: {maxBlobSize: 20GiB}
                upstreams:
                  - {name: lab.local, url: "https://lab.local", trustedRealms: [Auth.Lab.Local, "sso.lab.local:8443"]}
                """, Map.of(), NONE);
        assertThat(c.server().eventLoops()).isEqualTo(6);
        assertThat(c.server().headerTimeout()).isEqualTo(Duration.ofSeconds(10));
        assertThat(c.server().keepAliveTimeout()).isEqualTo(Duration.ofSeconds(30));
        assertThat(c.server().maxConnections()).isEqualTo(5000);
        assertThat(c.server().maxConnectionsPerClient()).isEqualTo(64);
        assertThat(c.storage().maxBlobSize()).isEqualTo(20L << 30);
        assertThat(c.defaultUpstream().trustedRealms()).containsExactly("auth.lab.local", "sso.lab.local:8443");

        MirrorConfig defaults = ConfigLoader.load(null, Map.of(), NONE);
        assertThat(defaults.server().eventLoops()).isEqualTo(Runtime.getRuntime().availableProcessors());
        assertThat(defaults.server().headerTimeout()).isEqualTo(Duration.ofSeconds(60));
        assertThat(defaults.server().keepAliveTimeout()).isEqualTo(Duration.ofSeconds(75));
        assertThat(defaults.server().maxConnections()).isZero();
        assertThat(defaults.server().maxConnectionsPerClient()).isEqualTo(1024);
        assertThat(defaults.storage().maxBlobSize()).isEqualTo(64L << 30);
        assertThat(defaults.defaultUpstream().trustedRealms()).isEmpty();
    }

    @Test
    void badConnectionAndRealmValuesNameTheKey() {
        assertError("server: {eventLoops: 0}", "server.eventLoops: \"0\" must be between 1 and 256");
        assertError("server: {maxConnectionsPerClient: -5}", "server.maxConnectionsPerClient: \"-5\" must be between 1");
        assertError("server: {headerTimeout: 0s}", "server.headerTimeout: \"0s\" must be more than zero");
        assertError("storage: {maxBlobSize: 0}", "storage.maxBlobSize: \"0\" must be more than zero");
        assertError("upstreams: [{name: a.io, url: 'http://x', trustedRealms: auth.a.io}]",
                "upstreams[0].trustedRealms: must be a list of host names");
        assertError("upstreams: [{name: a.io, url: 'http://x', trustedRealms: ['https://auth.a.io/token']}]",
                "upstreams[0].trustedRealms[0]: \"https://auth.a.io/token\" is not a host name");
    }

    @Test
    void prefetchEntriesAreReadAndChecked() {
        MirrorConfig c = ConfigLoader.parse("""
                upstreams:
                  - {name: docker.io, url: "https://registry-1.docker.io"}
                  - {name: ghcr.io, url: "https://ghcr.io"}
                prefetch:
                  - image: docker.io/alpine:3.19
                    platforms: [linux/amd64, linux/arm64/v8]
                    every: 1h
                  - image: ghcr.io/acme/tools/app:v1.2.3
                """, Map.of(), NONE);
        assertThat(c.prefetch()).containsExactly(
                new MirrorConfig.Prefetch("docker.io", "library/alpine", "3.19", java.util.List.of("linux/amd64", "linux/arm64/v8"),
                        Duration.ofHours(1)),
                new MirrorConfig.Prefetch("ghcr.io", "acme/tools/app", "v1.2.3", java.util.List.of(), null));
        assertThat(ConfigLoader.parse("", Map.of(), NONE).prefetch()).isEmpty();

        String[][] bad = {
                {"prefetch: [{image: quay.io/x/y:1}]", "prefetch[0].image: \"quay.io/x/y:1\" names upstream \"quay.io\","
                        + " which is not configured (upstreams: docker.io)"},
                {"prefetch: [{image: alpine}]", "prefetch[0].image: \"alpine\" is not <upstream name>/<repository>:<tag>"
                        + " (e.g. docker.io/library/alpine:3.19)"},
                {"prefetch: [{image: docker.io/Alpine:3}]", "prefetch[0].image: \"docker.io/Alpine:3\": \"library/Alpine\""
                        + " is not a repository name"},
                {"prefetch: [{image: 'docker.io/alpine:-x'}]", "prefetch[0].image: \"docker.io/alpine:-x\": \"-x\" is not a tag"},
                {"prefetch: [{image: docker.io/alpine:3, platforms: [amd64]}]",
                        "prefetch[0].platforms[0]: \"amd64\" is not <os>/<architecture>[/<variant>] (e.g. linux/arm64/v8)"},
                {"prefetch: [{image: docker.io/alpine:3, every: 10s}]", "prefetch[0].every: \"10s\" is too short (at least 1m)"},
                {"prefetch: [{image: docker.io/alpine:3, tag: x}]", "prefetch[0].tag: unknown key"},
                {"prefetch: [{}]", "prefetch[0].image: required, e.g. docker.io/library/alpine:3.19"},
        };
        for (String[] b : bad) {
            assertThatThrownBy(() -> ConfigLoader.parse(b[0], Map.of(), NONE)).as(b[0]).hasMessageStartingWith(b[1]);
        }
    }

    @Test
    void theAdminApiIsOffUnlessATokenIsSetAndAShortTokenIsRefusedWithoutShowingIt() {
        assertThat(ConfigLoader.parse("", Map.of(), NONE).admin().enabled()).isFalse();
        MirrorConfig c = ConfigLoader.parse("admin: {token: '${ADMIN_TOKEN}'}",
                Map.of("ADMIN_TOKEN", "0123456789abcdef0123"), NONE);
        assertThat(c.admin().token()).isEqualTo("0123456789abcdef0123");
        assertThat(c.toString()).doesNotContain("0123456789abcdef0123");
        assertThatThrownBy(() -> ConfigLoader.parse("admin: {token: s3cret}", Map.of(), NONE))
                .hasMessage("admin.token: too short (6 characters; at least 16, e.g. from `openssl rand -hex 24`)")
                .message().doesNotContain("s3cret");
        assertThatThrownBy(() -> ConfigLoader.parse("admin: {token: '${NOPE}'}", Map.of(), NONE))
                .hasMessage("admin.token: refers to environment variable NOPE, which is not set");
        assertThatThrownBy(() -> ConfigLoader.parse("admin: {tokn: x}", Map.of(), NONE))
                .hasMessageStartingWith("admin.tokn: unknown key");
    }

    @Test
    void tlsNeedsReadableCertificateAndKeyFiles(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir) throws Exception {
        java.nio.file.Path cert = java.nio.file.Files.writeString(dir.resolve("tls.crt"), "x");
        java.nio.file.Path key = java.nio.file.Files.writeString(dir.resolve("tls.key"), "x");
        assertThat(ConfigLoader.parse("", Map.of(), NONE).server().tls()).isNull();
        MirrorConfig c = ConfigLoader.parse("server: {tls: {certFile: '" + cert + "', keyFile: '" + key + "'}}", Map.of(), NONE);
        assertThat(c.server().tls()).isEqualTo(new MirrorConfig.Tls(cert, key, null));
        assertThatThrownBy(() -> ConfigLoader.parse("server: {tls: {certFile: '" + cert + "'}}", Map.of(), NONE))
                .hasMessageStartingWith("server.tls.keyFile: required with server.tls");
        assertThatThrownBy(() -> ConfigLoader.parse("server: {tls: {certFile: '" + cert + "', keyFile: '" + key
                + "', clientCaFile: /nope/ca.crt}}", Map.of(), NONE))
                .hasMessage("server.tls.clientCaFile: \"/nope/ca.crt\" is not a readable file");
        assertThatThrownBy(() -> ConfigLoader.parse("server: {tls: {cert: x}}", Map.of(), NONE))
                .hasMessageStartingWith("server.tls.cert: unknown key");
    }

    @Test
    void accessIsReadAndCheckedNamingTheKey(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir) throws Exception {
        java.nio.file.Path users = java.nio.file.Files.writeString(dir.resolve("htpasswd"), "");
        MirrorConfig c = ConfigLoader.parse("""
                upstreams: [{name: docker.io, url: "https://registry-1.docker.io"}, {name: ghcr.io, url: "https://ghcr.io"}]
                access:
                  users: '%s'
                  networks: [10.0.0.0/8, "fd00::/8"]
                  rules:
                    - repositories: ["docker.io/private/**", "ghcr.io/acme/**"]
                      pull: [alice, ci-bot]
                    - repositories: ["**"]
                      pull: [anonymous]
                  metrics: [authenticated]
                  requestsPerSecond: 50
                """.formatted(users), Map.of(), NONE);
        assertThat(c.access().users()).isEqualTo(users);
        assertThat(c.access().networks()).containsExactly("10.0.0.0/8", "fd00::/8");
        assertThat(c.access().rules()).containsExactly(
                new MirrorConfig.Rule(java.util.List.of("docker.io/private/**", "ghcr.io/acme/**"), java.util.List.of("alice", "ci-bot")),
                new MirrorConfig.Rule(java.util.List.of("**"), java.util.List.of("anonymous")));
        assertThat(c.access().metrics()).containsExactly("authenticated");
        assertThat(c.access().admin()).isNull();
        assertThat(c.access().requestsPerSecond()).isEqualTo(50);
        assertThat(ConfigLoader.parse("", Map.of(), NONE).access().restricts()).isFalse();
        MirrorConfig keyed = ConfigLoader.parse("access: {tokenKey: '${KEY}'}", Map.of("KEY", "k".repeat(40)), NONE);
        assertThat(keyed.access().tokenKey()).isEqualTo("k".repeat(40));
        assertThat(keyed.toString()).doesNotContain("kkkk");

        String[][] bad = {
                {"access: {networks: [10.0.0.0]}", "access.networks: \"10.0.0.0\" is not a CIDR block (e.g. 10.0.0.0/8)"},
                {"access: {networks: [10.0.0.0/33]}", "access.networks: \"10.0.0.0/33\" is not a CIDR block"},
                {"access: {users: /nope/htpasswd}", "access.users: \"/nope/htpasswd\" is not a readable file"},
                {"access: {rules: [{repositories: [quay.io/x/**], pull: [a]}]}",
                        "access.rules[0].repositories: \"quay.io/x/**\" is not <upstream name>/<repository glob> with a configured upstream"},
                {"access: {rules: [{repositories: [\"**\"], pull: [\"a b\"]}]}",
                        "access.rules[0].pull: \"a b\" is not a user or client-certificate name"},
                {"access: {rules: [{pull: [a]}]}", "access.rules[0].repositories: required"},
                {"access: {rules: [{repositories: [\"**\"], push: [\"a b\"]}]}",
                        "access.rules[0].push: \"a b\" is not a user or client-certificate name"},
                {"access: {rules: [{repositories: [team/**], push: [a]}]}",
                        "access.rules[0].repositories: \"team/**\" is not <upstream name>/<repository glob>"},
                {"access: {requestsPerSecond: 0}", "access.requestsPerSecond: \"0\" must be between 1"},
                {"access: {tokenKey: short-secret}", "access.tokenKey: too short (12 characters; at least 32"},
        };
        for (String[] b : bad) {
            assertThatThrownBy(() -> ConfigLoader.parse(b[0], Map.of(), NONE)).as(b[0]).hasMessageStartingWith(b[1]);
        }
    }

    @Test
    void aRuleNamesAnUpstreamWhoseNameHasAPort() {
        // The README's own example: the glob of a rule took no ':' and the start failed.
        MirrorConfig c = ConfigLoader.parse("""
                upstreams: [{name: docker.io, url: "https://registry-1.docker.io"}, {name: "lab.local:5000", url: "http://10.0.0.5:5000"}]
                access:
                  rules:
                    - repositories: ["lab.local:5000/private/**"]
                      pull: [alice]
                    - repositories: ["**"]
                      pull: [anonymous]
                """, Map.of(), NONE);
        assertThat(c.access().rules().get(0).repositories()).containsExactly("lab.local:5000/private/**");
        assertThat(c.access().failedLoginsPerMinute()).isEqualTo(10);
        assertThatThrownBy(() -> ConfigLoader.parse("""
                upstreams: [{name: "lab.local:5000", url: "http://10.0.0.5:5000"}]
                access: {rules: [{repositories: ["lab.local:5001/private/**"], pull: [a]}]}
                """, Map.of(), NONE)).hasMessageStartingWith("access.rules[0].repositories: \"lab.local:5001/private/**\" is not"
                + " <upstream name>/<repository glob> with a configured upstream (upstreams: lab.local:5000)");
        assertThatThrownBy(() -> ConfigLoader.parse("access: {failedLoginsPerMinute: 0}", Map.of(), NONE))
                .hasMessageStartingWith("access.failedLoginsPerMinute: \"0\" must be between 1");
    }

    @Test
    void aClusterIsReadAndCheckedWithoutShowingItsSecret() {
        String secret = "s".repeat(40);
        MirrorConfig c = ConfigLoader.parse("""
                cluster:
                  name: lan
                  secret: ${SECRET}
                  bind: 10.0.0.5:7800
                  members: [10.0.0.5:7800, 10.0.0.6:7800]
                  url: http://10.0.0.5:5000
                  copies: 2
                  failureDetection: 3s
                """, Map.of("SECRET", secret), NONE);
        MirrorConfig.Cluster cluster = c.cluster();
        assertThat(cluster.name()).isEqualTo("lan");
        assertThat(cluster.secret()).isEqualTo(secret);
        assertThat(cluster.bindHost()).isEqualTo("10.0.0.5");
        assertThat(cluster.bindPort()).isEqualTo(7800);
        assertThat(cluster.members()).containsExactly("10.0.0.5:7800", "10.0.0.6:7800");
        assertThat(cluster.url()).isEqualTo(URI.create("http://10.0.0.5:5000"));
        assertThat(cluster.copies()).isEqualTo(2);
        assertThat(cluster.failureDetection()).isEqualTo(Duration.ofSeconds(3));
        assertThat(c.toString()).doesNotContain(secret);
        assertThat(ConfigLoader.parse("", Map.of(), NONE).cluster()).as("alone without the section").isNull();
        MirrorConfig dns = ConfigLoader.parse("cluster: {name: lan, secret: '" + secret + "', bind: 'pod-0:7800',"
                + " dns: mirror.ns.svc.cluster.local, url: 'http://pod-0:5000'}", Map.of(), NONE);
        assertThat(dns.cluster().dns()).isEqualTo("mirror.ns.svc.cluster.local");
        assertThat(dns.cluster().failureDetection()).isEqualTo(Duration.ofSeconds(5));
        assertThat(dns.cluster().copies()).isEqualTo(1);
        assertThat(dns.cluster().dnsServer()).as("the system's resolver").isNull();
        assertThat(ConfigLoader.parse("cluster: {name: lan, secret: '" + secret + "', bind: 'pod-0:7800',"
                + " dns: mirror.ns.svc.cluster.local, dnsServer: '10.96.0.10:53', url: 'http://pod-0:5000'}", Map.of(),
                NONE).cluster().dnsServer()).isEqualTo("10.96.0.10:53");

        String ok = "name: lan, secret: '" + secret + "', bind: 'a:7800', url: 'http://a:5000'";
        String[][] bad = {
                {"cluster: {" + ok + "}", "cluster.members: give either members"},
                {"cluster: {" + ok + ", members: [a:7800], dns: x}", "cluster.members: give either members"},
                {"cluster: {" + ok.replace(secret, "short") + ", members: [a:7800]}",
                        "cluster.secret: too short (5 characters); at least 32"},
                {"cluster: {" + ok.replace("'a:7800'", "a") + ", members: [a:7800]}", "cluster.bind: \"a\" is not <address>:<port>"},
                {"cluster: {" + ok + ", members: [a]}", "cluster.members[0]: \"a\" is not <address>:<port>"},
                {"cluster: {" + ok + ", members: [a:7800], copies: 0}", "cluster.copies: \"0\" must be between 1 and 16"},
                {"cluster: {" + ok + ", members: [a:7800], failureDetection: 100ms}", "cluster.failureDetection: \"100ms\" is too short"},
                {"cluster: {" + ok + ", members: [a:7800], nodes: 3}", "cluster.nodes: unknown key"},
                {"cluster: {" + ok + ", members: [a:7800], dnsServer: '10.0.0.1:53'}", "cluster.dnsServer: only with dns"},
                {"cluster: {" + ok + ", dns: x, dnsServer: '10.0.0.1'}", "cluster.dnsServer: \"10.0.0.1\" is not <address>:<port>"},
        };
        for (String[] b : bad) {
            assertThatThrownBy(() -> ConfigLoader.parse(b[0], Map.of(), NONE)).as(b[0]).hasMessageStartingWith(b[1])
                    .message().doesNotContain(secret);
        }
    }
}
