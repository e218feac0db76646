package dev.registrymirror.proxy;

import dev.registrymirror.cache.Digest;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;

/** Pushes blobs and manifests to a real registry through the distribution API (for seeding upstreams). */
final class RegistryApi {
    private final String base;
    private final HttpClient http = HttpClient.newHttpClient();

    /** @param base e.g. {@code http://127.0.0.1:5001} */
    RegistryApi(String base) {
        this.base = base;
    }

    /** Uploads a blob in one PUT after opening an upload session; returns its digest. */
    Digest blob(String repo, byte[] bytes) throws IOException, InterruptedException {
        Digest d = Digest.of("sha256", bytes);
        HttpResponse<String> open = http.send(HttpRequest.newBuilder(URI.create(base + "/v2/" + repo + "/blobs/uploads/"))
                .POST(HttpRequest.BodyPublishers.noBody()).build(), HttpResponse.BodyHandlers.ofString());
        check(open, 202);
        String location = open.headers().firstValue("Location").orElseThrow();
        URI upload = URI.create(base).resolve(location);
        String sep = upload.getRawQuery() == null ? "?" : "&";
        HttpResponse<String> put = http.send(HttpRequest.newBuilder(URI.create(upload + sep + "digest=" + d))
                .header("Content-Type", "application/octet-stream")
                .PUT(HttpRequest.BodyPublishers.ofByteArray(bytes)).build(), HttpResponse.BodyHandlers.ofString());
        check(put, 201);
        return d;
    }

    /** Puts a manifest under {@code reference} (a tag or its digest); returns its digest. */
    Digest manifest(String repo, String reference, String mediaType, String json) throws IOException, InterruptedException {
        byte[] bytes = json.getBytes(StandardCharsets.UTF_8);
        HttpResponse<String> put = http.send(HttpRequest.newBuilder(URI.create(base + "/v2/" + repo + "/manifests/" + reference))
                .header("Content-Type", mediaType).PUT(HttpRequest.BodyPublishers.ofByteArray(bytes)).build(),
                HttpResponse.BodyHandlers.ofString());
        check(put, 201);
        return Digest.of("sha256", bytes);
    }

    /** An OCI image manifest with one config and one layer, both pushed; returns its JSON. */
    String image(String repo, String configType, byte[] layer) throws IOException, InterruptedException {
        byte[] config = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}"
                .getBytes(StandardCharsets.UTF_8);
        Digest c = blob(repo, config);
        Digest l = blob(repo, layer);
        return "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
                + "\"config\":{\"mediaType\":\"" + configType + "\",\"digest\":\"" + c + "\",\"size\":" + config.length + "},"
                + "\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"" + l
                + "\",\"size\":" + layer.length + "}]}";
    }

    private static void check(HttpResponse<String> r, int expected) {
        if (r.statusCode() != expected) {
            throw new IllegalStateException(r.request().method() + " " + r.uri() + ": " + r.statusCode() + " " + r.body());
        }
    }
}
