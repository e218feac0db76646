package dev.registrymirror.proxy;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Real programs for end-to-end tests: CNCF Distribution ({@code docker-registry}), {@code skopeo},
 * and the mirror's own jar, each as a child process on a loopback port.
 */
final class RealParts {
    private RealParts() {
    }

    /** The path of a required program; fails with how to install it. */
    static String require(String program) {
        for (String dir : System.getenv("PATH").split(":")) {
            Path p = Path.of(dir, program);
            if (Files.isExecutable(p)) {
                return p.toString();
            }
        }
        throw new IllegalStateException(program + " is not installed; the README's test command installs it "
                + "(apt-get install docker-registry skopeo prometheus)");
    }

    static int freePort() {
        return TestPorts.free();
    }

    /** Runs a command to completion; fails with its output when it exits non-zero. */
    static String run(Duration timeout, String... command) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(command).redirectErrorStream(true).start();
        byte[] out;
        boolean done = p.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS);
        if (!done) {
            p.destroyForcibly();
            throw new IllegalStateException("timed out: " + String.join(" ", command));
        }
        out = p.getInputStream().readAllBytes();
        String text = new String(out, StandardCharsets.UTF_8);
        if (p.exitValue() != 0) {
            throw new IllegalStateException("exit " + p.exitValue() + ": " + String.join(" ", command) + "\n" + text);
        }
        return text;
    }

    /** A child process that is killed at the end. */
    static final class Child implements AutoCloseable {
        final Process process;
        final Path log;

        Child(Path log, String... command) throws IOException {
            this.log = log;
            this.process = new ProcessBuilder(command).redirectErrorStream(true)
                    .redirectOutput(log.toFile()).start();
        }

        String log() throws IOException {
            return Files.readString(log);
        }

        @Override
        public void close() {
            process.destroy();
            try {
                if (!process.waitFor(10, TimeUnit.SECONDS)) {
                    process.destroyForcibly().waitFor();
                }
            } catch (InterruptedException e) {
                process.destroyForcibly();
                Thread.currentThread().interrupt();
            }
        }
    }

    /** Starts Distribution as a plain registry (or, with {@code proxyOf}, in proxy mode) on a free port. */
    static Child registry(Path dir, int port, String proxyOf) throws IOException {
        Files.createDirectories(dir);
        String config = """
                version: 0.1
                log:
                  level: warn
                storage:
                  filesystem:
                    rootdirectory: %s
                  delete:
                    enabled: true
                http:
                  addr: 127.0.0.1:%d
                %s""".formatted(dir.resolve("storage"), port,
                proxyOf == null ? "" : "proxy:\n  remoteurl: " + proxyOf + "\n");
        Path file = Files.writeString(dir.resolve("config.yml"), config);
        return new Child(dir.resolve("registry.log"), require("docker-registry"), "serve", file.toString());
    }

    /** Waits until {@code GET url} answers 200, or fails with the child's log. */
    static void awaitUp(String url, Child child) throws Exception {
        HttpClient http = HttpClient.newHttpClient();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (System.nanoTime() < deadline) {
            if (!child.process.isAlive()) {
                throw new IllegalStateException("exited: " + child.log());
            }
            try {
                HttpResponse<Void> r = http.send(HttpRequest.newBuilder(URI.create(url)).build(),
                        HttpResponse.BodyHandlers.discarding());
                if (r.statusCode() == 200) {
                    return;
                }
            } catch (IOException e) {
                // not yet listening
            }
            Thread.sleep(50); // polling a child process's readiness, not waiting for time to pass
        }
        throw new IllegalStateException("not up after 30 s: " + url + "\n" + child.log());
    }

    /** Starts the mirror from its jar. */
    static Child mirror(Path dir, int port, String... args) throws IOException {
        return mirror(dir, port, List.of(), args);
    }

    /** Starts the mirror from its jar, with more JVM options than {@code -Xmx256m}. */
    static Child mirror(Path dir, int port, List<String> jvmOptions, String... args) throws IOException {
        String jar = System.getProperty("mirror.jar", "target/registry-mirror.jar");
        if (!Files.isRegularFile(Path.of(jar))) {
            throw new IllegalStateException("no mirror jar at " + jar + "; run mvn verify (package comes first)");
        }
        List<String> command = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java")
                .toString(), "-Xmx256m"));
        command.addAll(jvmOptions);
        command.addAll(List.of("-jar", jar, "--port", Integer.toString(port)));
        Files.createDirectories(dir);
        if (!List.of(args).contains("--config")) {
            // The default storage.minFree (1 GiB) would make the outcome depend on this machine's free disk.
            Path config = Files.writeString(dir.resolve("test-mirror.yaml"), "storage: {minFree: 0}\n");
            command.addAll(List.of("--config", config.toString()));
        }
        command.addAll(List.of(args));
        return new Child(dir.resolve("mirror.log"), command.toArray(String[]::new));
    }

    static String get(String url) throws IOException, InterruptedException {
        return HttpClient.newHttpClient().send(HttpRequest.newBuilder(URI.create(url)).build(),
                HttpResponse.BodyHandlers.ofString()).body();
    }
}
