package dev.registrymirror.proxy;

import dev.registrymirror.proxy.operator.PrefetchCommand;
import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import org.junit.jupiter.api.Test;
import picocli.CommandLine;

/** {@code registry-mirror prefetch --mirror URL IMAGE...} against a running mirror. */
class PrefetchCommandTest extends MirrorTestBase {
    final StringWriter out = new StringWriter();
    final StringWriter err = new StringWriter();

    @Override
    String topLevelYaml() {
        return "\nadmin: {token: " + AdminApiTest.TOKEN + "}\n";
    }

    private int run(Map<String, String> env, String... args) {
        CommandLine cli = new CommandLine(new Main());
        cli.setOut(new PrintWriter(out, true));
        cli.setErr(new PrintWriter(err, true));
        CommandLine prefetch = cli.getSubcommands().get("prefetch");
        ((PrefetchCommand) prefetch.getCommand()).env = env;
        return cli.execute(args);
    }

    @Test
    void theCommandFetchesImagesAndFollowsTheirJobs() throws Exception {
        byte[] a = randomBytes(500_000, 21);
        byte[] b = randomBytes(1000, 22);
        hub.putImage("library/alpine", "3.19", a);
        hub.putImage("acme/tool", "v1", b);
        startMirror();
        int code = run(Map.of(PrefetchCommand.TOKEN_ENV, AdminApiTest.TOKEN), "prefetch", "--mirror", url(""),
                "docker.io/alpine:3.19", "docker.io/acme/tool:v1");
        assertThat(code).as(out + "\n" + err).isZero();
        assertThat(out.toString()).contains("docker.io/library/alpine:3.19: job 1 started")
                .contains("docker.io/acme/tool:v1: job 2 started")
                .containsPattern("docker.io/library/alpine:3.19: done, 2 of 2 blobs, 0\\.5 of 0\\.5 MiB")
                .contains("docker.io/acme/tool:v1: done, 2 of 2 blobs");
        assertThat(hub.count("cdn", "GET", "/blobs/" + Digest.of("sha256", a))).isEqualTo(1);
        assertThat(hub.count("cdn", "GET", "/blobs/" + Digest.of("sha256", b))).isEqualTo(1);
    }

    @Test
    void aFailedImageMakesTheExitStatusOne() {
        hub.putImage("library/alpine", "3.19", randomBytes(100, 23));
        startMirror();
        int code = run(Map.of(PrefetchCommand.TOKEN_ENV, AdminApiTest.TOKEN), "prefetch", "--mirror", url(""),
                "docker.io/alpine:3.19", "docker.io/library/missing:1", "quay.io/x:1");
        assertThat(code).isEqualTo(1);
        assertThat(out.toString()).contains("docker.io/library/alpine:3.19: done");
        assertThat(err.toString()).contains("docker.io/library/missing:1: failed: manifest 1: HTTP 404")
                .contains("quay.io/x:1: HTTP 400: image: \"quay.io/x:1\" names upstream \"quay.io\", which is not configured");
    }

    @Test
    void theTokenComesFromAFileOrTheEnvironmentAndAWrongOneIsSaidSo(@org.junit.jupiter.api.io.TempDir Path dir)
            throws Exception {
        hub.putImage("library/alpine", "3.19", randomBytes(100, 24));
        startMirror();
        assertThat(run(Map.of(), "prefetch", "--mirror", url(""), "docker.io/alpine:3.19")).isEqualTo(2);
        assertThat(err.toString()).contains("no admin token: set REGISTRY_MIRROR_ADMIN_TOKEN or give --token-file");

        Path wrong = Files.writeString(dir.resolve("wrong"), "not-the-token-at-all\n");
        assertThat(run(Map.of(), "prefetch", "--mirror", url(""), "--token-file", wrong.toString(),
                "docker.io/alpine:3.19")).isEqualTo(1);
        assertThat(err.toString()).contains("HTTP 401: the admin API needs the admin token");

        Path right = Files.writeString(dir.resolve("right"), AdminApiTest.TOKEN + "\n");
        assertThat(run(Map.of(), "prefetch", "--mirror", url(""), "--token-file", right.toString(),
                "docker.io/alpine:3.19")).isZero();
        assertThat(hub.count("cdn", "GET", "/blobs/")).isEqualTo(2);
    }
}
