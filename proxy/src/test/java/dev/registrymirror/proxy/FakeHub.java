package dev.registrymirror.proxy;

import dev.registrymirror.proxy.manifest.MediaTypes;

import dev.registrymirror.cache.Digest;
import io.vertx.core.AbstractVerticle;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.Vertx;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpServer;
import io.vertx.core.http.HttpServerOptions;
import io.vertx.core.http.HttpServerRequest;
import io.vertx.core.http.HttpServerResponse;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import io.vertx.core.net.SelfSignedCertificate;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Predicate;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A fake upstream that behaves as Docker Hub does (see REGISTRY-PROTOCOL.md), on three loopback
 * servers: the registry API ({@code 127.0.0.1}), the token realm, and a CDN reached through
 * {@code 307} redirects under another host name ({@code localhost}) that answers 400 to any
 * request carrying {@code Authorization}, as object stores do. Every request is recorded, so tests
 * count what reached the upstream. Faults are injected per request.
 */
final class FakeHub extends AbstractVerticle {
    /** One request as the fake saw it. */
    record Seen(String server, String method, String path, String query, String authorization, String userAgent) {
    }

    /** What to do with a request instead of answering it normally. */
    enum Fault { NONE, STATUS_500, STATUS_429, WRONG_BYTES, DROP_MID_BODY, STALL_MID_BODY, STALL_HEADERS }

    private record Stored(String mediaType, byte[] bytes) {
    }

    private static final Pattern ENDPOINT = Pattern.compile("/v2/(.+)/(manifests|blobs|referrers)/([^/]+)");
    private static final Pattern TAGS = Pattern.compile("/v2/(.+)/tags/list");

    final List<Seen> seen = new CopyOnWriteArrayList<>();
    private final Map<String, byte[]> blobs = new ConcurrentHashMap<>();
    private final Map<String, Stored> manifests = new ConcurrentHashMap<>();
    private final Map<String, String> tags = new ConcurrentHashMap<>();
    private final Map<String, String> tokens = new ConcurrentHashMap<>();
    private final AtomicInteger tokenSerial = new AtomicInteger();

    private HttpServer registry;
    private int registryPort;
    private HttpServer auth;
    private HttpServer cdn;
    private HttpServer internal;
    private final boolean tls;
    private final SelfSignedCertificate certificate;

    // Knobs, set by tests.
    volatile String username;
    volatile String password;
    volatile boolean basicAuth;
    volatile int tokenLifetimeSeconds = 300;
    volatile long tokenDelayMillis;
    volatile int rateLimit = 100;
    final AtomicInteger rateRemaining = new AtomicInteger(100);
    volatile Fault fault = Fault.NONE;
    volatile Predicate<Seen> faultWhen = s -> true;
    volatile boolean redirectBlobs = true;
    /** When set, the realm the challenges name instead of the fake's own token server. */
    volatile String realm;
    /** When set, manifests, tag lists and referrers answer 302 to this location (as no real registry does). */
    volatile String redirectOthersTo;
    /** When set, where blob requests are redirected instead of the fake's CDN. */
    volatile String blobLocation;
    /** When over 0, tag lists answer a body of this many bytes, streamed (chunked, or with its length declared). */
    volatile long tagsListBytes;
    volatile boolean declareLength;
    /** Manifest HEADs answer without Docker-Content-Digest (as some registries do). */
    volatile boolean headWithoutDigest;
    /** Manifest answers carry {@code ETag: "<digest>"}, as Distribution's do. */
    volatile boolean manifestEtag;
    /** Tag lists as CNCF Distribution 2.8 answers them: n and last ignored, no Link, not sorted. */
    volatile boolean tagsLikeDistribution;
    /** When set, the host the fake's tag-list Link points at (absolute), instead of a relative Link. */
    volatile String tagsLinkHost;
    /** When over 0, the token service answers a body of this many bytes, streamed. */
    volatile long tokenBytes;
    /** Bytes of such streamed bodies the fake has written. */
    final java.util.concurrent.atomic.AtomicLong streamedBytes = new java.util.concurrent.atomic.AtomicLong();
    /** The same, answer by answer, in the order they started. */
    final List<java.util.concurrent.atomic.AtomicLong> streams = new CopyOnWriteArrayList<>();
    /** When set, the CDN answers no blob request (not even its headers) before this completes. */
    volatile Promise<Void> holdBlobAnswers;
    /** When over 0, every blob is answered with this many bytes of filler, chunked (no Content-Length). */
    volatile long endlessBlobBytes;
    /** When set, the CDN sends the first half of a blob and waits for this before the rest. */
    volatile Promise<Void> holdSecondHalf;
    /** When set, requests to any server that {@link #holdWhen} matches are answered only once this completes. */
    volatile Promise<Void> holdRequests;
    volatile Predicate<Seen> holdWhen = s -> false;
    /** When over 0, the registry API answers each request this long after it arrived (an upstream far away). */
    volatile long registryDelayMillis;
    final Promise<Void> firstHalfSent = Promise.promise();

    FakeHub(boolean useTls) {
        this.tls = useTls;
        // Key generation is slow: done here, on the caller's thread, never on an event loop.
        this.certificate = useTls ? SelfSignedCertificate.create("localhost") : null;
    }

    /** Deploys a fake hub on {@code vertx}; the future completes once its three servers listen. */
    static Future<FakeHub> deploy(Vertx vertx, boolean useTls) {
        FakeHub hub = new FakeHub(useTls);
        return vertx.deployVerticle(hub).map(hub);
    }

    @Override
    public void start(Promise<Void> started) {
        listen(tls).<Void>mapEmpty().onComplete(started);
    }

    private Future<FakeHub> listen(boolean useTls) {
        HttpServerOptions options = new HttpServerOptions().setHost("0.0.0.0").setPort(0);
        if (useTls) {
            options.setSsl(true).setKeyCertOptions(certificate.keyCertOptions());
        }
        return vertx.createHttpServer(options).requestHandler(r -> record("registry", r, this::registry)).listen()
                .compose(s -> {
                    registry = s;
                    return vertx.createHttpServer(options).requestHandler(r -> record("auth", r, this::token)).listen();
                })
                .compose(s -> {
                    auth = s;
                    return vertx.createHttpServer(options).requestHandler(r -> record("cdn", r, this::cdn)).listen();
                })
                .compose(s -> {
                    cdn = s;
                    // A server the mirror must never reach on an upstream's say-so (an address inside the LAN).
                    return vertx.createHttpServer(new HttpServerOptions().setHost("127.0.0.1").setPort(0))
                            .requestHandler(r -> record("internal", r, (req, seen) -> req.response()
                                    .putHeader("Content-Type", "application/json")
                                    .end("{\"name\":\"internal\",\"tags\":[\"SECRET-internal-only\"]}")))
                            .listen();
                })
                .map(s -> {
                    internal = s;
                    return this;
                });
    }

    /** Closes only the registry API server: the upstream is down, connections are refused. */
    Future<Void> stopRegistry() {
        registryPort = registry.actualPort();
        return registry.close();
    }

    /** Listens again on the registry port that {@link #stopRegistry} closed: the upstream is back. */
    Future<Void> restartRegistry() {
        HttpServerOptions options = new HttpServerOptions().setHost("0.0.0.0").setPort(registryPort);
        if (tls) {
            options.setSsl(true).setKeyCertOptions(certificate.keyCertOptions());
        }
        return vertx.createHttpServer(options).requestHandler(r -> record("registry", r, this::registry)).listen()
                .map(s -> {
                    registry = s;
                    return null;
                });
    }

    String url() {
        int port = registryPort != 0 ? registryPort : registry.actualPort();
        return (tls ? "https" : "http") + "://" + (tls ? "localhost" : "127.0.0.1") + ":" + port;
    }

    /** The plain-HTTP "internal" server's base URL. */
    String internalUrl() {
        return "http://127.0.0.1:" + internal.actualPort();
    }

    /** The token server's URL, under {@code host} (the same server, named otherwise). */
    String tokenUrl(String host) {
        return (tls ? "https" : "http") + "://" + host + ":" + auth.actualPort() + "/token";
    }

    /** PEM file of the self-signed certificate, when started with TLS. */
    String certificatePath() {
        return certificate.certificatePath();
    }

    // ---------------------------------------------------------------- content

    Digest putBlob(byte[] bytes) {
        Digest d = Digest.of("sha256", bytes);
        blobs.put(d.toString(), bytes);
        return d;
    }

    Digest putManifest(String repo, String tag, String mediaType, byte[] bytes) {
        Digest d = Digest.of("sha256", bytes);
        manifests.put(repo + "@" + d, new Stored(mediaType, bytes));
        if (tag != null) {
            tags.put(repo + ":" + tag, d.toString());
        }
        return d;
    }

    /** The bytes of a manifest put under {@code repo}. */
    byte[] manifestBytes(String repo, Digest digest) {
        return manifests.get(repo + "@" + digest).bytes();
    }

    /** Blobs that only one repository has (others answer 404), as a registry with private repositories. */
    final Map<String, String> blobOnlyIn = new ConcurrentHashMap<>();

    void removeTag(String repo, String tag) {
        tags.remove(repo + ":" + tag);
    }

    /** Serves {@code bytes} as if they were the manifest {@code claimed}: an upstream sending wrong bytes. */
    void putManifestUnder(String repo, Digest claimed, String mediaType, byte[] bytes) {
        manifests.put(repo + "@" + claimed, new Stored(mediaType, bytes));
    }

    /** An image manifest with one layer; returns the manifest's digest. */
    Digest putImage(String repo, String tag, byte[] layer) {
        Digest layerDigest = putBlob(layer);
        byte[] config = ("{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]},"
                + "\"n\":\"" + UUID.randomUUID() + "\"}").getBytes(StandardCharsets.UTF_8);
        Digest configDigest = putBlob(config);
        JsonObject manifest = new JsonObject().put("schemaVersion", 2)
                .put("mediaType", MediaTypes.OCI_MANIFEST)
                .put("config", new JsonObject().put("mediaType", "application/vnd.oci.image.config.v1+json")
                        .put("digest", configDigest.toString()).put("size", config.length))
                .put("layers", new JsonArray().add(new JsonObject()
                        .put("mediaType", "application/vnd.oci.image.layer.v1.tar+gzip")
                        .put("digest", layerDigest.toString()).put("size", layer.length)));
        return putManifest(repo, tag, MediaTypes.OCI_MANIFEST, manifest.encode().getBytes(StandardCharsets.UTF_8));
    }

    // ---------------------------------------------------------------- counting

    long count(String server, String method, String pathPart) {
        return seen.stream().filter(s -> s.server().equals(server) && s.method().equals(method)
                && s.path().contains(pathPart)).count();
    }

    long count(String server) {
        return seen.stream().filter(s -> s.server().equals(server)).count();
    }

    List<Seen> seen(String server) {
        List<Seen> out = new ArrayList<>();
        for (Seen s : seen) {
            if (s.server().equals(server)) {
                out.add(s);
            }
        }
        return out;
    }

    // ---------------------------------------------------------------- servers

    private interface Handler {
        void handle(HttpServerRequest req, Seen seen);
    }

    private void record(String server, HttpServerRequest req, Handler handler) {
        Seen s = new Seen(server, req.method().name(), req.path(), req.query(), req.getHeader("Authorization"),
                req.getHeader("User-Agent"));
        seen.add(s);
        Promise<Void> hold = holdRequests;
        if (server.equals("registry") && registryDelayMillis > 0) {
            vertx.setTimer(registryDelayMillis, t -> answer(s, req, handler));
            return;
        }
        if (hold != null && holdWhen.test(s)) {
            hold.future().onComplete(v -> answer(s, req, handler));
            return;
        }
        answer(s, req, handler);
    }

    private void answer(Seen s, HttpServerRequest req, Handler handler) {
        if (fault == Fault.STATUS_500 && faultWhen.test(s)) {
            error(req.response(), 500, "UNKNOWN", "injected failure");
            return;
        }
        if (fault == Fault.STATUS_429 && faultWhen.test(s)) {
            req.response().putHeader("Retry-After", "42");
            error(req.response(), 429, "TOOMANYREQUESTS", "You have reached your pull rate limit.");
            return;
        }
        if (fault == Fault.STALL_HEADERS && faultWhen.test(s)) {
            return; // never answer
        }
        handler.handle(req, s);
    }

    private void token(HttpServerRequest req, Seen seen) {
        if (username != null) {
            String expected = "Basic " + Base64.getEncoder().encodeToString((username + ":" + password)
                    .getBytes(StandardCharsets.UTF_8));
            if (!expected.equals(req.getHeader("Authorization"))) {
                error(req.response(), 401, "UNAUTHORIZED", "incorrect username or password");
                return;
            }
        }
        if (tokenBytes > 0) {
            stream(req.response(), "{\"token\":\"", tokenBytes, declareLength);
            return;
        }
        String scope = req.getParam("scope");
        String token = "tok-" + tokenSerial.incrementAndGet();
        tokens.put(token, scope == null ? "" : scope);
        JsonObject body = new JsonObject().put("token", token).put("access_token", token)
                .put("expires_in", tokenLifetimeSeconds).put("issued_at", "2026-11-23T00:00:00Z");
        if (tokenDelayMillis > 0) {
            vertx.setTimer(tokenDelayMillis, t -> req.response().putHeader("Content-Type", "application/json")
                    .end(body.encode()));
        } else {
            req.response().putHeader("Content-Type", "application/json").end(body.encode());
        }
    }

    private boolean authorized(HttpServerRequest req, String repo) {
        String h = req.getHeader("Authorization");
        if (basicAuth) {
            String expected = "Basic " + Base64.getEncoder().encodeToString((username + ":" + password)
                    .getBytes(StandardCharsets.UTF_8));
            if (expected.equals(h)) {
                return true;
            }
            req.response().putHeader("WWW-Authenticate", "Basic realm=\"fake\"");
            error(req.response(), 401, "UNAUTHORIZED", "authentication required");
            return false;
        }
        String scope = repo == null ? null : "repository:" + repo + ":pull";
        if (h != null && h.startsWith("Bearer ")) {
            String granted = tokens.get(h.substring(7));
            if (granted != null && (scope == null || granted.equals(scope))) {
                return true;
            }
        }
        String realm = this.realm != null ? this.realm
                : (tls ? "https" : "http") + "://" + (tls ? "localhost" : "127.0.0.1") + ":" + auth.actualPort() + "/token";
        req.response().putHeader("WWW-Authenticate", "Bearer realm=\"" + realm + "\",service=\"registry.docker.io\""
                + (scope == null ? "" : ",scope=\"" + scope + "\""));
        error(req.response(), 401, "UNAUTHORIZED", "authentication required");
        return false;
    }

    private void registry(HttpServerRequest req, Seen seen) {
        String path = req.path();
        if (path.equals("/v2/")) {
            if (authorized(req, null)) {
                req.response().end("{}");
            }
            return;
        }
        Matcher tagsList = TAGS.matcher(path);
        if (tagsList.matches()) {
            String repo = tagsList.group(1);
            if (!authorized(req, repo)) {
                return;
            }
            if (redirectOthersTo != null) {
                req.response().setStatusCode(302).putHeader("Location", redirectOthersTo).end();
                return;
            }
            if (tagsListBytes > 0) {
                stream(req.response(), "{\"name\":\"" + repo + "\",\"tags\":[\"", tagsListBytes, declareLength);
                return;
            }
            tagsList(req, repo);
            return;
        }
        Matcher m = ENDPOINT.matcher(path);
        if (!m.matches()) {
            error(req.response(), 404, "NAME_UNKNOWN", "no such endpoint");
            return;
        }
        String repo = m.group(1);
        String ref = m.group(3);
        if (!authorized(req, repo)) {
            return;
        }
        if (redirectOthersTo != null && !m.group(2).equals("blobs")) {
            req.response().setStatusCode(302).putHeader("Location", redirectOthersTo).end();
            return;
        }
        if (m.group(2).equals("referrers")) {
            error(req.response(), 404, "NAME_UNKNOWN", "no such endpoint"); // Distribution 2.8 has no referrers API
        } else if (m.group(2).equals("manifests")) {
            manifest(req, repo, ref);
        } else {
            if (blobOnlyIn.containsKey(ref) && !blobOnlyIn.get(ref).equals(repo)) {
                error(req.response(), 404, "BLOB_UNKNOWN", "blob unknown to repository");
            } else {
                blob(req, ref, seen);
            }
        }
    }

    private void manifest(HttpServerRequest req, String repo, String ref) {
        HttpServerResponse resp = req.response();
        boolean head = req.method().name().equals("HEAD");
        if (!head) {
            int left = rateRemaining.decrementAndGet();
            if (left < 0) {
                rateRemaining.set(0);
                resp.putHeader("Retry-After", "3600");
                error(resp, 429, "TOOMANYREQUESTS", "You have reached your pull rate limit.");
                return;
            }
        }
        resp.putHeader("ratelimit-limit", rateLimit + ";w=21600")
                .putHeader("ratelimit-remaining", Math.max(0, rateRemaining.get()) + ";w=21600")
                .putHeader("docker-ratelimit-source", "192.0.2.1");
        String digest = ref.contains(":") ? ref : tags.get(repo + ":" + ref);
        Stored s = digest == null ? null : manifests.get(repo + "@" + digest);
        if (s == null) {
            error(resp, 404, "MANIFEST_UNKNOWN", "manifest unknown");
            return;
        }
        resp.putHeader("Content-Type", s.mediaType()).putHeader("Content-Length", Integer.toString(s.bytes().length));
        if (!(head && headWithoutDigest)) {
            resp.putHeader("Docker-Content-Digest", digest);
        }
        if (manifestEtag) {
            resp.putHeader("ETag", "\"" + digest + "\"");
        }
        if (head) {
            resp.end();
        } else {
            resp.end(Buffer.buffer(s.bytes()));
        }
    }

    private void blob(HttpServerRequest req, String digest, Seen seen) {
        if (!blobs.containsKey(digest)) {
            error(req.response(), 404, "BLOB_UNKNOWN", "blob unknown to registry");
            return;
        }
        if (!redirectBlobs) {
            sendBlob(req, digest, seen);
            return;
        }
        String location = blobLocation != null ? blobLocation
                : (tls ? "https" : "http") + "://localhost:" + cdn.actualPort() + "/blobs/" + digest
                + "?X-Amz-Signature=abc123&X-Amz-Expires=600";
        req.response().setStatusCode(307).putHeader("Location", location).end();
    }

    private void cdn(HttpServerRequest req, Seen seen) {
        if (req.getHeader("Authorization") != null) {
            req.response().setStatusCode(400).putHeader("Content-Type", "application/xml")
                    .end("<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed</Message></Error>");
            return;
        }
        if (req.getParam("X-Amz-Signature") == null) {
            req.response().setStatusCode(403).end("<Error><Code>AccessDenied</Code></Error>");
            return;
        }
        Promise<Void> hold = holdBlobAnswers;
        if (hold != null) {
            hold.future().onComplete(v -> sendBlob(req, req.path().substring("/blobs/".length()), seen));
            return;
        }
        sendBlob(req, req.path().substring("/blobs/".length()), seen);
    }

    private void sendBlob(HttpServerRequest req, String digest, Seen seen) {
        byte[] bytes = blobs.get(digest);
        HttpServerResponse resp = req.response();
        if (endlessBlobBytes > 0 && !req.method().name().equals("HEAD")) {
            stream(resp, "", endlessBlobBytes, false);
            return;
        }
        Matcher range = req.getHeader("Range") == null ? null
                : Pattern.compile("bytes=(\\d+)-(\\d+)").matcher(req.getHeader("Range"));
        if (range != null && range.matches()) {
            int first = Integer.parseInt(range.group(1));
            int last = Math.min(Integer.parseInt(range.group(2)), bytes.length - 1);
            resp.setStatusCode(206).putHeader("Content-Type", "application/octet-stream")
                    .putHeader("Content-Range", "bytes " + first + "-" + last + "/" + bytes.length)
                    .end(dev.registrymirror.proxy.vertx.NettyBuffers.wrap(io.netty.buffer.Unpooled.wrappedBuffer(bytes, first, last - first + 1)));
            return;
        }
        resp.putHeader("Content-Type", "application/octet-stream")
                .putHeader("Content-Length", Integer.toString(bytes.length));
        if (req.method().name().equals("HEAD")) {
            resp.end();
            return;
        }
        boolean faulty = faultWhen.test(seen);
        Fault f = faulty ? fault : Fault.NONE;
        byte[] body = bytes;
        if (f == Fault.WRONG_BYTES) {
            body = bytes.clone();
            body[body.length / 2] ^= 0x5a;
        }
        int half = body.length / 2;
        // Wrapped, not copied: copying tens of MiB per request on the event loop trips the blocked-loop guard
        // on a busy machine.
        Buffer all = dev.registrymirror.proxy.vertx.NettyBuffers.wrap(io.netty.buffer.Unpooled.wrappedBuffer(body));
        writeSlices(resp, all, 0, half).onComplete(w -> {
            if (f == Fault.DROP_MID_BODY) {
                vertx.setTimer(20, t -> req.connection().close());
                return;
            }
            if (f == Fault.STALL_MID_BODY) {
                return; // the connection stays open, silent
            }
            firstHalfSent.tryComplete();
            Promise<Void> hold = holdSecondHalf;
            Future<Void> gate = hold == null ? Future.succeededFuture() : hold.future();
            gate.onComplete(v -> writeSlices(resp, all, half, all.length()).onComplete(x -> resp.end()));
        });
    }

    /**
     * Answers {@code prefix} then filler up to {@code total} bytes, in 64 KiB pieces as the socket
     * drains, counting what it writes in {@link #streamedBytes}; stops when the connection closes.
     */
    private void stream(HttpServerResponse resp, String prefix, long total, boolean declare) {
        resp.putHeader("Content-Type", "application/json");
        if (declare) {
            resp.putHeader("Content-Length", Long.toString(total));
        } else {
            resp.setChunked(true);
        }
        boolean[] closed = {false};
        resp.closeHandler(v -> closed[0] = true);
        byte[] filler = new byte[64 * 1024];
        java.util.Arrays.fill(filler, (byte) 'a');
        byte[] head = prefix.getBytes(StandardCharsets.UTF_8);
        System.arraycopy(head, 0, filler, 0, head.length);
        long[] left = {total};
        java.util.concurrent.atomic.AtomicLong mine = new java.util.concurrent.atomic.AtomicLong();
        streams.add(mine);
        Runnable[] pump = new Runnable[1];
        pump[0] = () -> {
            while (left[0] > 0 && !closed[0]) {
                int n = (int) Math.min(filler.length, left[0]);
                resp.write(dev.registrymirror.proxy.vertx.NettyBuffers.wrap(io.netty.buffer.Unpooled.wrappedBuffer(filler, 0, n)));
                left[0] -= n;
                streamedBytes.addAndGet(n);
                mine.addAndGet(n);
                if (resp.writeQueueFull()) {
                    resp.drainHandler(v -> {
                        resp.drainHandler(null);
                        pump[0].run();
                    });
                    return;
                }
            }
            if (!closed[0]) {
                resp.end();
            }
        };
        pump[0].run();
    }

    /**
     * Writes {@code buf[from, to)} in 1 MiB pieces, waiting for the socket to drain: one large write
     * makes Netty copy it into one huge direct buffer on the event loop, which the blocked-loop guard
     * of the tests (rightly) reports.
     */
    private static Future<Void> writeSlices(HttpServerResponse resp, Buffer buf, int from, int to) {
        Promise<Void> done = Promise.promise();
        writeSlicesFrom(resp, buf, from, to, done);
        return done.future();
    }

    private static void writeSlicesFrom(HttpServerResponse resp, Buffer buf, int from, int to, Promise<Void> done) {
        int at = from;
        while (at < to) {
            int end = Math.min(to, at + (1 << 20));
            resp.write(buf.slice(at, end));
            at = end;
            if (resp.writeQueueFull()) {
                int next = at;
                resp.drainHandler(v -> {
                    resp.drainHandler(null);
                    writeSlicesFrom(resp, buf, next, to, done);
                });
                return;
            }
        }
        done.tryComplete();
    }

    private void tagsList(HttpServerRequest req, String repo) {
        List<String> names = new ArrayList<>();
        for (String key : tags.keySet()) {
            if (key.startsWith(repo + ":")) {
                names.add(key.substring(repo.length() + 1));
            }
        }
        names.sort(String::compareTo);
        if (names.isEmpty()) {
            error(req.response(), 404, "NAME_UNKNOWN", "repository name not known to registry");
            return;
        }
        if (tagsLikeDistribution) {
            java.util.Collections.reverse(names);
        } else {
            String last = req.getParam("last");
            if (last != null) {
                names.removeIf(n -> n.compareTo(last) <= 0);
            }
            String n = req.getParam("n");
            if (n != null && names.size() > Integer.parseInt(n)) {
                names = names.subList(0, Integer.parseInt(n));
                String base = tagsLinkHost != null ? "https://" + tagsLinkHost : "";
                req.response().putHeader("Link", "<" + base + "/v2/" + repo + "/tags/list?last="
                        + names.get(names.size() - 1) + "&n=" + n + ">; rel=\"next\"");
            }
        }
        req.response().putHeader("Content-Type", "application/json")
                .end(new JsonObject().put("name", repo).put("tags", new JsonArray(names)).encode());
    }

    private static void error(HttpServerResponse resp, int status, String code, String message) {
        resp.setStatusCode(status).putHeader("Content-Type", "application/json")
                .end(new JsonObject().put("errors", new JsonArray().add(new JsonObject().put("code", code)
                        .put("message", message))).encode());
    }
}
