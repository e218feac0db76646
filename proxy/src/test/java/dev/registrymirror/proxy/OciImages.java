package dev.registrymirror.proxy;

import dev.registrymirror.proxy.manifest.MediaTypes;

import dev.registrymirror.cache.Digest;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Random;

/**
 * Builds test images as OCI layouts on disk (real gzip'd tar layers made with {@code tar}), for
 * {@code skopeo copy oci:DIR:tag docker://…} to push into a real registry. Nothing is downloaded.
 */
final class OciImages {
    private final Path layout;

    OciImages(Path layout) throws IOException {
        this.layout = layout;
        Files.createDirectories(layout.resolve("blobs/sha256"));
        Files.writeString(layout.resolve("oci-layout"), "{\"imageLayoutVersion\":\"1.0.0\"}");
        Files.writeString(layout.resolve("index.json"), new JsonObject().put("schemaVersion", 2)
                .put("manifests", new JsonArray()).encode());
    }

    Path path() {
        return layout;
    }

    private JsonObject descriptor(String mediaType, byte[] bytes) throws IOException {
        Digest d = Digest.of("sha256", bytes);
        Files.write(layout.resolve("blobs/sha256").resolve(d.hex()), bytes);
        return new JsonObject().put("mediaType", mediaType).put("digest", d.toString()).put("size", bytes.length);
    }

    /** A layer: a gzip'd tar holding one file of {@code size} random bytes. */
    byte[] layer(String fileName, int size, long seed) throws Exception {
        Path work = Files.createTempDirectory("layer");
        byte[] content = new byte[size];
        new Random(seed).nextBytes(content);
        Files.write(work.resolve(fileName), content);
        Path tgz = work.resolve("layer.tar.gz");
        RealParts.run(Duration.ofMinutes(1), "tar", "--sort=name", "--mtime=@0", "--owner=0", "--group=0",
                "-czf", tgz.toString(), "-C", work.toString(), fileName);
        return Files.readAllBytes(tgz);
    }

    /** An image manifest for one platform; returns its descriptor (with platform). */
    JsonObject image(String arch, byte[]... layers) throws IOException {
        JsonArray layerDescs = new JsonArray();
        JsonArray diffIds = new JsonArray();
        for (byte[] l : layers) {
            layerDescs.add(descriptor("application/vnd.oci.image.layer.v1.tar+gzip", l));
            diffIds.add("sha256:" + Digest.of("sha256", gunzip(l)).hex());
        }
        byte[] config = new JsonObject().put("architecture", arch).put("os", "linux")
                .put("config", new JsonObject().put("Cmd", new JsonArray().add("/bin/true")))
                .put("rootfs", new JsonObject().put("type", "layers").put("diff_ids", diffIds))
                .encode().getBytes(StandardCharsets.UTF_8);
        byte[] manifest = new JsonObject().put("schemaVersion", 2).put("mediaType", MediaTypes.OCI_MANIFEST)
                .put("config", descriptor("application/vnd.oci.image.config.v1+json", config))
                .put("layers", layerDescs).encode().getBytes(StandardCharsets.UTF_8);
        return descriptor(MediaTypes.OCI_MANIFEST, manifest)
                .put("platform", new JsonObject().put("architecture", arch).put("os", "linux"));
    }

    /** Tags a single manifest in the layout's index. */
    void tag(String tag, JsonObject descriptor) throws IOException {
        JsonObject index = new JsonObject(Files.readString(layout.resolve("index.json")));
        JsonObject d = descriptor.copy();
        d.remove("platform");
        d.put("annotations", new JsonObject().put("org.opencontainers.image.ref.name", tag));
        index.getJsonArray("manifests").add(d);
        Files.writeString(layout.resolve("index.json"), index.encode());
    }

    /** Tags a multi-platform index of the given manifests. */
    void tagIndex(String tag, JsonObject... manifests) throws IOException {
        JsonArray list = new JsonArray();
        for (JsonObject m : manifests) {
            list.add(m);
        }
        byte[] index = new JsonObject().put("schemaVersion", 2).put("mediaType", MediaTypes.OCI_INDEX)
                .put("manifests", list).encode().getBytes(StandardCharsets.UTF_8);
        tag(tag, descriptor(MediaTypes.OCI_INDEX, index));
    }

    private static byte[] gunzip(byte[] gz) throws IOException {
        try (var in = new java.util.zip.GZIPInputStream(new java.io.ByteArrayInputStream(gz))) {
            return in.readAllBytes();
        }
    }
}
