package dev.registrymirror.proxy.operator;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.PrintWriter;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/**
 * {@code registry-mirror prefetch --mirror URL IMAGE...}: asks a running mirror's admin API to fetch
 * images, and follows the jobs until they end. The token comes from the environment or a file, never
 * the command line (where {@code ps} would show it).
 */
@Command(name = "prefetch", mixinStandardHelpOptions = true,
        description = "Ask a running mirror to fetch images into its cache (admin API), and wait for them.",
        footer = "%nThe admin token is read from REGISTRY_MIRROR_ADMIN_TOKEN, or from --token-file."
                + "%nExit status: 0 when every image was fetched, 1 when one failed, 2 on a usage error.")
public final class PrefetchCommand implements Callable<Integer> {
    public static final String TOKEN_ENV = "REGISTRY_MIRROR_ADMIN_TOKEN";
    private static final ObjectMapper JSON = new ObjectMapper();

    @Spec
    CommandSpec spec;

    @Option(names = "--mirror", required = true, paramLabel = "URL", description = "the mirror, e.g. http://mirror:5000")
    URI mirror;

    @Option(names = "--platform", paramLabel = "OS/ARCH[/VARIANT]",
            description = "fetch only these platforms of a multi-platform image (repeatable; default: all)")
    List<String> platforms = new ArrayList<>();

    @Option(names = "--token-file", paramLabel = "FILE", description = "file holding the admin token")
    Path tokenFile;

    @Option(names = "--no-wait", description = "start the jobs and return without following them")
    boolean noWait;

    @Parameters(arity = "1..*", paramLabel = "IMAGE", description = "<upstream name>/<repository>:<tag>, e.g. docker.io/library/alpine:3.19")
    List<String> images;

    /** Where the token comes from when no file is given (tests replace it). */
    /** The environment the token is read from (tests give their own). */
    public Map<String, String> env = System.getenv();

    @Override
    public Integer call() throws InterruptedException {
        PrintWriter out = spec.commandLine().getOut();
        PrintWriter err = spec.commandLine().getErr();
        String token;
        try {
            token = tokenFile != null ? Files.readString(tokenFile).strip() : env.get(TOKEN_ENV);
        } catch (IOException e) {
            err.println("registry-mirror prefetch: cannot read --token-file " + tokenFile + ": " + e.getMessage());
            return 2;
        }
        if (token == null || token.isEmpty()) {
            err.println("registry-mirror prefetch: no admin token: set " + TOKEN_ENV + " or give --token-file");
            return 2;
        }
        HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
        Map<String, String> jobs = new LinkedHashMap<>(); // job id -> image
        int failed = 0;
        for (String image : images) {
            ObjectNode body = JSON.createObjectNode().put("image", image);
            platforms.forEach(body.putArray("platforms")::add);
            try {
                JsonNode answer = call(http, token, HttpRequest.newBuilder(mirror.resolve("/admin/prefetch"))
                        .POST(HttpRequest.BodyPublishers.ofString(body.toString())).header("Content-Type", "application/json"), 202);
                jobs.put(answer.path("id").asText(), answer.path("image").asText());
                out.println(answer.path("image").asText() + ": job " + answer.path("id").asText() + " started");
            } catch (IOException e) {
                err.println(image + ": " + e.getMessage());
                failed++;
            }
            out.flush();
        }
        if (noWait) {
            return failed == 0 ? 0 : 1;
        }
        Map<String, String> lastLine = new LinkedHashMap<>();
        while (!jobs.isEmpty()) {
            Thread.sleep(500); // a person is watching: twice a second is often enough
            for (Map.Entry<String, String> job : new ArrayList<>(jobs.entrySet())) {
                JsonNode j;
                try {
                    j = call(http, token, HttpRequest.newBuilder(mirror.resolve("/admin/prefetch/" + job.getKey())).GET(), 200);
                } catch (IOException e) {
                    err.println(job.getValue() + ": " + e.getMessage());
                    jobs.remove(job.getKey());
                    failed++;
                    continue;
                }
                String state = j.path("state").asText();
                String line = job.getValue() + ": " + describe(j);
                if (!line.equals(lastLine.get(job.getKey()))) {
                    (state.equals("failed") ? err : out).println(line);
                    lastLine.put(job.getKey(), line);
                }
                if (!state.equals("running")) {
                    jobs.remove(job.getKey());
                    if (!state.equals("done")) {
                        failed++;
                    }
                }
            }
            out.flush();
            err.flush();
        }
        return failed == 0 ? 0 : 1;
    }

    /** {@code running, 2 of 5 blobs, 12.0 of 40.1 MiB}; {@code done, ...}; {@code failed: why}. */
    static String describe(JsonNode j) {
        String state = j.path("state").asText();
        if (state.equals("failed")) {
            return "failed: " + j.path("error").asText();
        }
        if (j.path("blobs").isNull() || j.path("blobs").isMissingNode()) {
            return state + ", resolving the tag";
        }
        return String.format(java.util.Locale.ROOT, "%s, %d of %d blobs, %.1f of %.1f MiB", state,
                j.path("blobsDone").asLong(), j.path("blobs").asLong(), j.path("bytesDone").asLong() / 1048576.0,
                j.path("bytes").asLong() / 1048576.0);
    }

    private static JsonNode call(HttpClient http, String token, HttpRequest.Builder request, int expected) throws IOException,
            InterruptedException {
        HttpResponse<String> r;
        try {
            r = http.send(request.header("Authorization", "Bearer " + token).timeout(Duration.ofSeconds(30)).build(),
                    HttpResponse.BodyHandlers.ofString());
        } catch (IOException e) {
            throw new IOException("cannot reach the mirror: " + e, e);
        }
        JsonNode body;
        try {
            body = JSON.readTree(r.body());
        } catch (IOException e) {
            throw new IOException("HTTP " + r.statusCode() + " and not JSON: is this the mirror?");
        }
        if (r.statusCode() != expected) {
            throw new IOException("HTTP " + r.statusCode() + ": " + body.path("errors").path(0).path("message").asText(r.body()));
        }
        return body;
    }
}
