package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import io.vertx.core.json.JsonObject;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * Random requests over a raw socket: paths with {@code ..} and percent-encoded variants, overlong
 * names, bad digests, odd {@code Range} headers, huge headers, broken request lines. Every answer
 * must be a 4xx with an OCI error body or a correct 2xx; never a 5xx, never a file from outside
 * the storage folder.
 */
class FuzzTest extends MirrorTestBase {
    static final long SEED = Long.getLong("fuzz.seed", 20261123L);
    static final int REQUESTS = Integer.getInteger("fuzz.requests", 3000);
    static final String SECRET = "SECRET-" + Long.toHexString(SEED) + "-must-never-be-served";

    private final Random random = new Random(SEED);
    private final List<String> digests = new ArrayList<>();
    /** Whether the request being made is random bytes, which may not even contain a request line. */
    private boolean garbage;

    /** A parsed answer. */
    record Answer(int status, Map<String, String> headers, byte[] body) {
    }

    @Test
    void everyAnswerIsAClean4xxOrACorrect2xx() throws Exception {
        // Files a path traversal would reach: next to the storage folder and inside it, outside blobs/.
        Files.writeString(storage.resolveSibling(storage.getFileName() + "-secret"), SECRET);
        Files.writeString(storage.resolve("secret"), SECRET);
        digests.add(hub.putImage("library/alpine", "3.19", randomBytes(5000, 1)).toString());
        digests.add(hub.putBlob(randomBytes(3000, 2)).toString());
        digests.add(Digest.of("sha256", new byte[] {1}).toString());
        startMirror();

        Map<Integer, Integer> statuses = new LinkedHashMap<>();
        for (int i = 0; i < REQUESTS; i++) {
            byte[] request = request();
            String shown = new String(request, 0, Math.min(request.length, 300), StandardCharsets.ISO_8859_1);
            Answer a;
            try {
                a = exchange(request);
            } catch (java.net.SocketTimeoutException e) {
                throw new AssertionError("seed " + SEED + ", request " + i + " got no answer: " + shown, e);
            }
            statuses.merge(a.status(), 1, Integer::sum);
            if (shown.startsWith("GET /v2/ HTTP/9.9")) {
                // Not HTTP/1.x: the HTTP layer (Vert.x) answers 501 and closes, before any handler runs.
                assertThat(a.status()).isEqualTo(501);
                continue;
            }
            String body = new String(a.body(), StandardCharsets.UTF_8);
            assertThat(body).as("seed %d, request %d: %s", SEED, i, shown).doesNotContain(SECRET);
            assertThat(a.status()).as("seed %d, request %d: %s", SEED, i, shown)
                    .isBetween(200, 499).isNotIn(300, 301, 302, 303, 304, 307, 308);
            boolean head = shown.startsWith("HEAD ");
            if (a.status() >= 400 && !head) {
                JsonObject error = new JsonObject(body).getJsonArray("errors").getJsonObject(0);
                assertThat(error.getString("code")).as("request %d: %s", i, shown).isNotBlank();
            }
            if (a.status() == 200 && !head && a.headers().containsKey("docker-content-digest")) {
                Digest d = Digest.parse(a.headers().get("docker-content-digest"));
                assertThat(Digest.of(d.algorithm(), a.body())).as("request %d: %s", i, shown).isEqualTo(d);
            }
        }
        assertThat(statuses).as("a spread of answers").containsKeys(200, 400, 404);
        assertThat(mirror.metrics().scrape()).doesNotContain("status=\"500\"");
    }

    private byte[] request() {
        int kind = random.nextInt(20);
        if (kind == 0) {
            garbage = true;
            return garbage();
        }
        garbage = false;
        String method = pick("GET", "GET", "GET", "HEAD", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "G E T");
        StringBuilder req = new StringBuilder(method).append(' ').append(path()).append(" HTTP/1.1\r\n");
        req.append("Host: 127.0.0.1\r\n");
        if (random.nextInt(3) == 0) {
            req.append("Range: ").append(pick("bytes=0-0", "bytes=-1", "bytes=5-2", "bytes=", "bytes=-0",
                    "bytes=0-99999999999999999999999", "bytes=1-2,3-4", "items=0-1", "bytes=-999999999",
                    "bytes=999999-", "bytes=0-", "bytes= 1 - 2", "bytes=a-b")).append("\r\n");
        }
        if (random.nextInt(3) == 0) {
            req.append("Accept: ").append(pick("*/*", "", "application/vnd.oci.image.index.v1+json",
                    "text/html", "application/vnd.docker.distribution.manifest.v2+json;q=0.5, */*;q=0.1",
                    ",,,;;;", "a/b".repeat(500))).append("\r\n");
        }
        if (random.nextInt(25) == 0) {
            req.append("X-Huge: ").append("h".repeat(random.nextInt(40_000))).append("\r\n");
        }
        if (random.nextInt(25) == 0) {
            for (int i = 0; i < 300; i++) {
                req.append("X-Many-").append(i).append(": v\r\n");
            }
        }
        req.append("Connection: close\r\n\r\n");
        return req.toString().getBytes(StandardCharsets.ISO_8859_1);
    }

    private String path() {
        int kind = random.nextInt(12);
        String repo = repo();
        String p = switch (kind) {
            case 0 -> "/v2/";
            case 1 -> "/metrics";
            case 2, 3 -> "/v2/" + repo + "/blobs/" + reference(true);
            case 4, 5 -> "/v2/" + repo + "/manifests/" + reference(false);
            case 6 -> "/v2/" + repo + "/tags/list" + pick("", "?n=2", "?n=-1", "?n=abc", "?last=%00", "?n=99999999999");
            case 7 -> "/v2/" + repo + "/referrers/" + reference(true);
            case 8 -> "/" + component() + "/" + component();
            case 9 -> "/v2/" + repo + "/blobs/uploads/";
            case 10 -> pick("*", "http://127.0.0.1/v2/", "//v2//", "/v2/../../etc/passwd", "/v2/%2e%2e/%2e%2e/secret",
                    "/v2/library/alpine/blobs/sha256:..%2f..%2fsecret", "/v2/..%2F..%2F" + storageName() + "-secret");
            default -> "/v2/" + repo + "/" + component() + "/" + reference(random.nextBoolean());
        };
        if (random.nextInt(6) == 0) {
            p += (p.contains("?") ? "&" : "?") + "ns=" + pick("docker.io", "ghcr.io", "..", "%2e", "a".repeat(300), "");
        }
        return p;
    }

    private String storageName() {
        return storage.getFileName().toString();
    }

    private String repo() {
        if (random.nextInt(4) == 0) {
            return pick("library/alpine", "alpine", "library/alpine/../alpine", "a".repeat(300),
                    "x/".repeat(100) + "y", "Library/Alpine", "_x/y", "a--b", "a__b", "%2e%2e/%2e%2e", "..", ".");
        }
        int n = 1 + random.nextInt(3);
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < n; i++) {
            if (i > 0) {
                b.append('/');
            }
            b.append(component());
        }
        return b.toString();
    }

    private String component() {
        return pick("library", "alpine", "..", ".", "%2e%2e", "%2E%2e%2f", "%2F", "..%2f", "%252e%252e", "%00",
                "%", "%zz", "~root", "a b", "UPPER", "x.y", "x_y", "x-y", "é", "manifests", "blobs", "tags", "list",
                "referrers", "_tags", "a".repeat(1 + random.nextInt(400)), "\\..\\..", ";", "*", "sha256:abc");
    }

    private String reference(boolean digest) {
        if (digest || random.nextBoolean()) {
            return pick(digests.get(random.nextInt(digests.size())),
                    "sha256:" + hex(64), "sha256:" + hex(63), "sha256:" + hex(65), "sha256:" + hex(64).toUpperCase(Locale.ROOT),
                    "sha512:" + hex(128), "sha512:" + hex(64), "md5:" + hex(32), "sha256:", ":" + hex(64),
                    "sha256:../../" + storageName() + "-secret", "sha256:%2e%2e%2f" + hex(58), "sha256+b64:abc",
                    "sha256:" + hex(64) + "/../../secret");
        }
        return pick("3.19", "latest", "-bad", ".bad", "a".repeat(129), "a".repeat(128), "x:y", "..", "%2e%2e", "v1.0_rc-1");
    }

    private String hex(int n) {
        StringBuilder b = new StringBuilder(n);
        for (int i = 0; i < n; i++) {
            b.append(Character.forDigit(random.nextInt(16), 16));
        }
        return b.toString();
    }

    private byte[] garbage() {
        byte[] b = new byte[1 + random.nextInt(200)];
        random.nextBytes(b);
        String[] starts = {"GET /v2/ HTTP/9.9\r\n\r\n", "GET\r\n\r\n", "\r\n\r\n", "GET /v2/ HTTP/1.1\r\nHost\r\n\r\n",
            "GET " + "/a".repeat(6000) + " HTTP/1.1\r\n\r\n"};
        if (random.nextBoolean()) {
            return starts[random.nextInt(starts.length)].getBytes(StandardCharsets.ISO_8859_1);
        }
        return (new String(b, StandardCharsets.ISO_8859_1) + "\r\n\r\n").getBytes(StandardCharsets.ISO_8859_1);
    }

    @SafeVarargs
    private <T> T pick(T... options) {
        return options[random.nextInt(options.length)];
    }

    /** Sends raw bytes on a new connection and reads one response, to its length or to the close. */
    private Answer exchange(byte[] request) throws IOException {
        try (Socket s = new Socket("127.0.0.1", mirror.port())) {
            s.setSoTimeout(15_000);
            OutputStream out = s.getOutputStream();
            try {
                out.write(request);
                out.flush();
            } catch (IOException e) {
                // the server may close early on an oversized request; read what it said
            }
            InputStream in = s.getInputStream();
            if (garbage) {
                s.shutdownOutput(); // no more is coming: a server waiting for a request line may close
            }
            String statusLine = line(in);
            if (garbage && statusLine.isEmpty()) {
                return new Answer(400, Map.of(), "{\"errors\":[{\"code\":\"closed without answer\"}]}"
                        .getBytes(StandardCharsets.UTF_8));
            }
            assertThat(statusLine).as("a response to %s", new String(request, 0, Math.min(200, request.length),
                    StandardCharsets.ISO_8859_1)).matches("HTTP/(1\\.[01]|9\\.9) \\d{3}.*");
            int status = Integer.parseInt(statusLine.substring(9, 12));
            Map<String, String> headers = new LinkedHashMap<>();
            String h;
            while (!(h = line(in)).isEmpty()) {
                int colon = h.indexOf(':');
                headers.put(h.substring(0, colon).trim().toLowerCase(Locale.ROOT), h.substring(colon + 1).trim());
            }
            boolean head = new String(request, 0, Math.min(5, request.length), StandardCharsets.ISO_8859_1)
                    .startsWith("HEAD ");
            byte[] body;
            if (head || status == 204 || status == 304) {
                body = new byte[0];
            } else if (headers.containsKey("content-length")) {
                body = in.readNBytes(Integer.parseInt(headers.get("content-length")));
            } else if ("chunked".equalsIgnoreCase(headers.get("transfer-encoding"))) {
                body = chunked(in);
            } else {
                body = in.readAllBytes();
            }
            return new Answer(status, headers, body);
        }
    }

    private static byte[] chunked(InputStream in) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        while (true) {
            int size = Integer.parseInt(line(in).split(";")[0].trim(), 16);
            if (size == 0) {
                line(in);
                return out.toByteArray();
            }
            out.write(in.readNBytes(size));
            line(in);
        }
    }

    private static String line(InputStream in) throws IOException {
        StringBuilder b = new StringBuilder();
        int c;
        while ((c = in.read()) != -1 && c != '\n') {
            if (c != '\r') {
                b.append((char) c);
            }
        }
        return b.toString();
    }
}
