package dev.registrymirror.proxy.operator;

import dev.registrymirror.cache.Digest;
import dev.registrymirror.cache.ManifestStore;
import dev.registrymirror.cache.Storage;
import dev.registrymirror.cache.TagStore;
import dev.registrymirror.config.MirrorConfig;
import dev.registrymirror.proxy.access.Secrets;
import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.route.RouteParser;
import dev.registrymirror.proxy.vertx.Blocking;
import dev.registrymirror.proxy.cluster.Cluster;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.HttpServerRequest;
import io.vertx.core.json.DecodeException;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.io.IOException;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.SortedMap;
import java.util.function.Supplier;
import java.util.regex.Pattern;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The admin API under {@code /admin/}: off unless {@code admin.token} is set, and then that token
 * ({@code Authorization: Bearer <token>}) is required on every call.
 * <ul>
 * <li>{@code POST /admin/prefetch} {@code {"image": "docker.io/library/alpine:3.19", "platforms": [...]}}:
 *     starts a prefetch (or joins the one under way for that image); 202 with the job.</li>
 * <li>{@code GET /admin/prefetch}, {@code GET /admin/prefetch/<id>}: the last jobs, one job, with progress.</li>
 * <li>{@code GET /admin/repositories[?n=100&last=<name>]}: cached repositories with their tags,
 *     sizes and last pull, paged like the registry catalog ({@code Link: <...>; rel="next"}).</li>
 * <li>{@code GET /admin/repositories/<upstream>/<repository>}: one of them.</li>
 * <li>{@code DELETE /admin/repositories/<upstream>/<repository>[?tag=<tag>...]}: forgets its tags
 *     (or those named); the next pull resolves them upstream again.</li>
 * <li>{@code DELETE /admin/digests/<digest>}: removes the blob or manifest stored under it.</li>
 * </ul>
 * Every call that changes something, and every refused call, is logged with the client's address.
 */
public final class AdminApi {
    private static final Logger LOG = LoggerFactory.getLogger(AdminApi.class);
    static final String PREFIX = "/admin/";
    /** Request bodies larger than this are refused: a prefetch request is a line of JSON. */
    static final int MAX_BODY = 64 << 10;
    static final int DEFAULT_PAGE = 100;
    static final int MAX_PAGE = 1000;
    private static final Pattern TAG = Pattern.compile("[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}");

    private final MirrorConfig config;
    private final Storage storage;
    private final Blocking blocking;
    private final Supplier<Prefetcher> prefetcher;
    /** SHA-256 of the token: comparing hashes takes the same time whatever the lengths. */
    private final byte[] tokenHash;

    /** Hosted repositories; null without {@code hosted}. */
    private final dev.registrymirror.proxy.hosted.HostedRegistry hosted;

    /** The replicas this one forms one cache with (removals reach them all); null when it runs alone. */
    private final Cluster cluster;

    public AdminApi(MirrorConfig config, Storage storage, Blocking blocking, Supplier<Prefetcher> prefetcher,
                    Cluster cluster, dev.registrymirror.proxy.hosted.HostedRegistry hosted) {
        this.hosted = hosted;
        this.cluster = cluster;
        this.config = config;
        this.storage = storage;
        this.blocking = blocking;
        this.prefetcher = prefetcher;
        this.tokenHash = config.admin().enabled() ? Secrets.sha256(config.admin().token().getBytes(StandardCharsets.UTF_8)) : null;
    }

    /**
     * Runs {@code call} if the admin API is on and the request carries its token: else a 404 (off)
     * or a 401 (no or wrong token), logged without the token.
     */
    Future<Void> authorized(HttpServerRequest req, java.util.function.Supplier<Future<Void>> call) {
        if (tokenHash == null) {
            return Future.failedFuture(new RegistryError(404, "UNSUPPORTED",
                    "the admin API is off; set admin.token in the configuration to turn it on"));
        }
        String refusal = refusal(req.getHeader(HttpHeaders.AUTHORIZATION));
        if (refusal != null) {
            LOG.warn("admin: refused {} {} from {}: {}", req.method(), req.path(), client(req), refusal);
            return Future.failedFuture(RegistryError.challenge(
                    "the admin API needs the admin token: Authorization: Bearer <admin.token>",
                    "Bearer realm=\"registry-mirror admin\""));
        }
        return call.get();
    }

    /** {@code POST /admin/prefetch}: starts a job (or joins the one under way for the image). */
    Future<Void> prefetch(HttpServerRequest req) {
        return body(req).compose(body -> startPrefetch(req, body));
    }

    /** {@code GET /admin/prefetch}: the last jobs. */
    Future<Void> jobs(HttpServerRequest req) {
        JsonArray jobs = new JsonArray();
        prefetcher.get().jobs().forEach(j -> jobs.add(j.toJson()));
        return json(req, 200, new JsonObject().put("jobs", jobs));
    }

    /** {@code GET /admin/prefetch/<id>}: one job. */
    Future<Void> job(HttpServerRequest req, String id) {
        return prefetcher.get().job(id)
                .map(j -> json(req, 200, j.toJson()))
                .orElseGet(() -> Future.failedFuture(new RegistryError(404, "UNKNOWN",
                        "no prefetch job " + id + " (the last " + Prefetcher.KEPT_JOBS + " are kept)")));
    }

    /**
     * {@code GET /admin/hosted}: hosted content apart from the cache: bytes, quota, items, open uploads
     * and every hosted repository with its tags and manifests (read from the database, not a snapshot).
     */
    Future<Void> hosted(HttpServerRequest req) {
        if (hosted == null) {
            return Future.failedFuture(noHosted());
        }
        dev.registrymirror.cache.HostedStore s = hosted.store();
        return blocking.run(s::repositories).compose(list -> {
            JsonArray repos = new JsonArray();
            list.forEach(r -> repos.add(new JsonObject().put("name", r.name()).put("tags", r.tags())
                    .put("manifests", r.manifests())));
            return json(req, 200, new JsonObject().put("bytes", s.bytes())
                    .put("maxSize", config.hosted().maxSize() > 0 ? config.hosted().maxSize() : null)
                    .put("blobs", s.blobCount()).put("manifests", s.manifestCount()).put("uploads", hosted.openUploads())
                    .put("repositories", repos));
        });
    }

    /** {@code POST /admin/hosted/gc}: a garbage collection of hosted content now (joins one under way). */
    Future<Void> collectHosted(HttpServerRequest req) {
        if (hosted == null) {
            return Future.failedFuture(noHosted());
        }
        LOG.info("admin: garbage collection of hosted repositories asked by {}", client(req));
        return hosted.collect().compose(c -> json(req, 200, new JsonObject().put("manifests", c.manifests())
                .put("blobs", c.blobs()).put("bytes", c.bytes()).put("strayFiles", c.strayFiles())));
    }

    private static RegistryError noHosted() {
        return new RegistryError(404, "UNSUPPORTED", "no hosted repositories: set hosted.repositories in the configuration");
    }

    /** {@code GET /admin/repositories}: the cached repositories, a page at a time. */
    Future<Void> repositories(HttpServerRequest req) {
        return listRepositories(req);
    }

    /** {@code GET /admin/repositories/<upstream>/<repository>}: its tags, sizes and last pulls. */
    Future<Void> repository(HttpServerRequest req, String name) {
        return repositoryName(name).compose(n -> blocking.run(() -> repository(n)))
                .compose(r -> r.getJsonArray("tags").isEmpty()
                        ? Future.failedFuture(new RegistryError(404, "NAME_UNKNOWN", name + " has no tags in the cache"))
                        : json(req, 200, r));
    }

    /**
     * {@code DELETE /admin/repositories/<upstream>/<repository>[?tag=]}: forgets its tags, here and,
     * in a cluster, on every other replica (each may keep a tag it served).
     */
    Future<Void> removeRepository(HttpServerRequest req, String name) {
        return repositoryName(name).compose(n -> removeTags(req, n, true));
    }

    /**
     * {@code DELETE /admin/digests/<digest>}: removes a blob and/or manifest, here and, in a cluster,
     * on every other replica (its owners, and any that held it before a membership change).
     */
    Future<Void> digest(HttpServerRequest req, String digest) {
        return removeDigest(req, digest, true);
    }

    /**
     * A removal another replica forwards (signed with the cluster's secret, checked by the caller):
     * done here only, never forwarded again. Only the two removals are taken this way.
     */
    public Future<Void> removalFromReplica(HttpServerRequest req) {
        String path = req.path();
        if (req.method() == HttpMethod.DELETE && path.startsWith("/admin/digests/")) {
            return removeDigest(req, path.substring("/admin/digests/".length()), false);
        }
        if (req.method() == HttpMethod.DELETE && path.startsWith("/admin/repositories/")) {
            return repositoryName(path.substring("/admin/repositories/".length()))
                    .compose(n -> removeTags(req, n, false));
        }
        return Future.failedFuture(new RegistryError(403, "DENIED", "a replica may only forward removals"));
    }

    /**
     * Sends the same removal to every other live replica; yields what each answered: its JSON, or its
     * status, or why it could not be asked (a replica that is down removes nothing, and is named).
     */
    private Future<JsonArray> forward(HttpServerRequest req, boolean forward) {
        if (!forward || cluster == null) {
            return Future.succeededFuture(new JsonArray());
        }
        List<Future<JsonObject>> answers = new java.util.ArrayList<>();
        for (java.net.URI replica : cluster.members()) {
            if (replica.equals(cluster.self())) {
                continue;
            }
            answers.add(cluster.send(replica, HttpMethod.DELETE, req.uri(), null).compose(resp ->
                    dev.registrymirror.proxy.upstream.Bodies.small(resp).map(body -> {
                        JsonObject answer = new JsonObject().put("replica", replica.toString())
                                .put("status", resp.statusCode());
                        if (resp.statusCode() == 200) {
                            try {
                                JsonObject said = body.toJsonObject();
                                said.remove("replicas");
                                answer.mergeIn(said);
                            } catch (RuntimeException notJson) {
                                // the status says enough
                            }
                        }
                        return answer;
                    })).otherwise(err -> new JsonObject().put("replica", replica.toString())
                    .put("error", err.toString())));
        }
        return Future.join(answers).transform(done -> {
            JsonArray all = new JsonArray();
            answers.forEach(a -> all.add(a.result()));
            return Future.succeededFuture(all);
        });
    }

    /** Whether some replica's answer in {@code replicas} says it removed something. */
    private static boolean removedElsewhere(JsonArray replicas) {
        for (int i = 0; i < replicas.size(); i++) {
            if (replicas.getJsonObject(i).getInteger("status", 0) == 200) {
                return true;
            }
        }
        return false;
    }

    /** Any other method on an admin path: 405 naming the allowed ones. */
    static Future<Void> methodNotAllowed(HttpServerRequest req, String allowed) {
        return notAllowed(req.method(), allowed);
    }

    /** Any other admin path. */
    static Future<Void> unknownCall(HttpServerRequest req) {
        return Future.failedFuture(new RegistryError(404, "UNSUPPORTED", "no admin call " + req.path()
                + " (see /admin/prefetch, /admin/repositories, /admin/digests/<digest>, /admin/hosted)"));
    }

    /** Why the request may not use the API, or {@code null} if its token is right. */
    private String refusal(String authorization) {
        if (authorization == null) {
            return "no Authorization header";
        }
        if (!authorization.regionMatches(true, 0, "Bearer ", 0, 7)) {
            return "not a bearer token";
        }
        byte[] given = Secrets.sha256(authorization.substring(7).strip().getBytes(StandardCharsets.UTF_8));
        return MessageDigest.isEqual(given, tokenHash) ? null : "wrong token";
    }

    private Future<Void> startPrefetch(HttpServerRequest req, Buffer body) {
        MirrorConfig.Prefetch image;
        try {
            JsonObject j = body.toJsonObject();
            List<String> platforms = new ArrayList<>();
            for (Object p : j.getJsonArray("platforms", new JsonArray())) {
                platforms.add(String.valueOf(p));
            }
            image = MirrorConfig.Prefetch.parse(j.getString("image"), platforms, null, config.upstreams());
        } catch (DecodeException | ClassCastException e) {
            return Future.failedFuture(new RegistryError(400, "UNSUPPORTED",
                    "the body must be JSON like {\"image\": \"docker.io/library/alpine:3.19\", \"platforms\": [\"linux/amd64\"]}"));
        } catch (IllegalArgumentException e) {
            return Future.failedFuture(new RegistryError(400, "NAME_INVALID", "image: " + e.getMessage()));
        }
        Prefetcher.Job job = prefetcher.get().submit(image, "api");
        LOG.info("admin: prefetch of {} (job {}) asked by {}", image.image(), job.id, client(req));
        req.response().putHeader(HttpHeaders.LOCATION, PREFIX + "prefetch/" + job.id);
        return json(req, 202, job.toJson());
    }

    private Future<Void> listRepositories(HttpServerRequest req) {
        int n;
        try {
            n = req.getParam("n") == null ? DEFAULT_PAGE : Integer.parseInt(req.getParam("n"));
        } catch (NumberFormatException e) {
            n = -1;
        }
        if (n < 1 || n > MAX_PAGE) {
            return Future.failedFuture(new RegistryError(400, "PAGINATION_NUMBER_INVALID",
                    "n must be between 1 and " + MAX_PAGE));
        }
        int page = n;
        String last = req.getParam("last");
        return blocking.run(() -> {
            List<String> names = storage.tags().repositories();
            List<String> after = last == null ? names
                    : names.stream().filter(x -> TagStore.REPOSITORY_ORDER.compare(x, last) > 0).toList();
            JsonArray list = new JsonArray();
            for (String name : after.subList(0, Math.min(page, after.size()))) {
                list.add(repository(name));
            }
            if (after.size() > page) {
                String next = after.get(page - 1);
                req.response().putHeader("Link", "<" + PREFIX + "repositories?n=" + page + "&last="
                        + URLEncoder.encode(next, StandardCharsets.UTF_8) + ">; rel=\"next\"");
            }
            return new JsonObject().put("repositories", list);
        }).compose(body -> json(req, 200, body));
    }

    /** {@code <upstream>/<repository>} checked; yields it with Docker Hub's {@code library/} added where a client would. */
    private Future<String> repositoryName(String name) {
        int slash = name.indexOf('/');
        Optional<MirrorConfig.Upstream> upstream = slash > 0 ? config.upstream(name.substring(0, slash)) : Optional.empty();
        if (upstream.isEmpty()) {
            return Future.failedFuture(new RegistryError(400, "NAME_INVALID", "\"" + name
                    + "\" is not <upstream name>/<repository> with a configured upstream (upstreams: "
                    + String.join(", ", config.upstreams().stream().map(MirrorConfig.Upstream::name).toList()) + ")"));
        }
        String repository = name.substring(slash + 1);
        if (!RouteParser.validName(repository)) {
            return Future.failedFuture(RegistryError.nameInvalid(repository));
        }
        if (upstream.get().isDockerHub() && repository.indexOf('/') < 0) {
            repository = "library/" + repository;
        }
        return Future.succeededFuture(upstream.get().name() + "/" + repository);
    }

    private Future<Void> removeTags(HttpServerRequest req, String name, boolean forward) {
        List<String> only = req.params().getAll("tag");
        for (String t : only) {
            if (!TAG.matcher(t).matches()) {
                return Future.failedFuture(new RegistryError(400, "TAG_INVALID", "\"" + t + "\" is not a tag"));
            }
        }
        int slash = name.indexOf('/');
        String upstream = name.substring(0, slash);
        String repository = name.substring(slash + 1);
        return blocking.run(() -> {
            if (only.isEmpty()) {
                return storage.tags().removeRepository(upstream, repository);
            }
            int removed = 0;
            for (String t : only) {
                TagStore.TagKey key = new TagStore.TagKey(upstream, repository, t);
                if (storage.tags().find(key).isPresent()) {
                    storage.tags().remove(key);
                    removed++;
                }
            }
            return removed;
        }).compose(removed -> forward(req, forward).compose(replicas -> {
            if (removed == 0 && !removedElsewhere(replicas)) {
                return Future.failedFuture(new RegistryError(404, "NAME_UNKNOWN", only.isEmpty()
                        ? name + " has no tags in the cache" : name + " has none of the tags " + only + " in the cache"));
            }
            if (removed > 0) {
                LOG.info("admin: removed {} tag{} of {}{} from the cache, asked by {}", removed,
                        removed == 1 ? "" : "s", name, only.isEmpty() ? "" : " " + only, who(req, forward));
            }
            JsonObject answer = new JsonObject().put("repository", name).put("removedTags", removed);
            return json(req, 200, cluster == null || !forward ? answer : answer.put("replicas", replicas));
        }));
    }

    private Future<Void> removeDigest(HttpServerRequest req, String text, boolean forward) {
        if (!Digest.isValid(text)) {
            return Future.failedFuture(RegistryError.digestInvalid(text));
        }
        Digest digest = Digest.parse(text);
        return blocking.run(() -> storage.remove(digest)).compose(kinds -> forward(req, forward).compose(replicas -> {
            if (kinds.isEmpty() && !removedElsewhere(replicas)) {
                return Future.failedFuture(new RegistryError(404, "BLOB_UNKNOWN", text + " is not in the cache"));
            }
            if (!kinds.isEmpty()) {
                LOG.info("admin: removed {} {} from the cache, asked by {}", String.join(" and ", kinds), digest,
                        who(req, forward));
            }
            JsonObject answer = new JsonObject().put("digest", text).put("removed", new JsonArray(kinds));
            return json(req, 200, cluster == null || !forward ? answer : answer.put("replicas", replicas));
        }));
    }

    /** Who asked for a removal: the client, or the replica that forwarded it. */
    private static String who(HttpServerRequest req, boolean direct) {
        return direct ? client(req) : "replica " + client(req) + " (forwarded)";
    }

    /**
     * One repository as the listing shows it: each tag with the bytes its image takes (manifests,
     * config and layers; every platform of an index), how many of those are stored here, and its
     * last pull (the last use of its manifest); the repository's totals count shared layers once.
     * Reads the index without counting as uses. Blocks.
     */
    private JsonObject repository(String name) throws IOException {
        int slash = name.indexOf('/');
        SortedMap<String, TagStore.TagEntry> tags = storage.tags().tags(name.substring(0, slash), name.substring(slash + 1));
        Map<Digest, long[]> all = new LinkedHashMap<>();
        Instant repoLast = null;
        JsonArray list = new JsonArray();
        for (Map.Entry<String, TagStore.TagEntry> t : tags.entrySet()) {
            Map<Digest, long[]> parts = new LinkedHashMap<>();
            Instant last = visit(t.getValue().digest(), t.getValue().size(), parts, true);
            all.putAll(parts);
            if (last != null && (repoLast == null || last.isAfter(repoLast))) {
                repoLast = last;
            }
            list.add(new JsonObject().put("tag", t.getKey()).put("digest", t.getValue().digest().toString())
                    .put("mediaType", t.getValue().mediaType()).put("size", total(parts, false))
                    .put("cachedBytes", total(parts, true)).put("lastPull", last == null ? null : last.toString())
                    .put("checked", t.getValue().checkedAt().toString()));
        }
        return new JsonObject().put("name", name).put("size", total(all, false)).put("cachedBytes", total(all, true))
                .put("lastPull", repoLast == null ? null : repoLast.toString()).put("tags", list);
    }

    /** Adds a manifest and what it refers to ({size, stored}) to {@code parts}; yields its last use. */
    private Instant visit(Digest digest, long size, Map<Digest, long[]> parts, boolean root) throws IOException {
        Optional<Storage.Item> item = storage.manifest(digest);
        parts.put(digest, new long[]{size, item.isPresent() ? 1 : 0});
        Instant last = item.map(Storage.Item::lastUse).orElse(null);
        Optional<ManifestStore.Manifest> m = storage.readManifest(digest);
        if (m.isEmpty()) {
            return last;
        }
        JsonObject json;
        try {
            json = new JsonObject(Buffer.buffer(m.get().bytes()));
        } catch (DecodeException e) {
            return last;
        }
        for (Object c : json.getJsonArray("manifests", new JsonArray())) {
            if (root && c instanceof JsonObject child && Digest.isValid(child.getString("digest", ""))) {
                Instant l = visit(Digest.parse(child.getString("digest")), child.getLong("size", 0L), parts, false);
                if (l != null && (last == null || l.isAfter(last))) {
                    last = l;
                }
            }
        }
        JsonArray blobs = json.getJsonArray("layers", new JsonArray()).copy(); // iterating yields JsonObjects
        if (json.getValue("config") instanceof JsonObject config) {
            blobs.add(config);
        }
        for (Object b : blobs) {
            if (b instanceof JsonObject desc && Digest.isValid(desc.getString("digest", ""))) {
                Digest d = Digest.parse(desc.getString("digest"));
                parts.put(d, new long[]{desc.getLong("size", 0L), storage.blob(d).isPresent() ? 1 : 0});
            }
        }
        return last;
    }

    private static long total(Map<Digest, long[]> parts, boolean storedOnly) {
        long sum = 0;
        for (long[] p : parts.values()) {
            if (!storedOnly || p[1] == 1) {
                sum += p[0];
            }
        }
        return sum;
    }

    /** The body, refused past {@value #MAX_BODY} bytes without being held. */
    private static Future<Buffer> body(HttpServerRequest req) {
        String length = req.getHeader(HttpHeaders.CONTENT_LENGTH);
        long declared = -1;
        try {
            declared = length == null ? -1 : Long.parseLong(length.strip());
        } catch (NumberFormatException e) {
            // the HTTP decoder would have refused it; counted as it arrives
        }
        if (declared > MAX_BODY) {
            req.response().putHeader(HttpHeaders.CONNECTION, "close"); // the body is not read
            return Future.failedFuture(new RegistryError(413, "SIZE_INVALID", "the body is larger than " + MAX_BODY + " bytes"));
        }
        Promise<Buffer> body = Promise.promise();
        Buffer buf = Buffer.buffer();
        req.handler(chunk -> {
            if (buf.length() + chunk.length() > MAX_BODY) {
                req.handler(null);
                req.response().putHeader(HttpHeaders.CONNECTION, "close");
                body.tryFail(new RegistryError(413, "SIZE_INVALID", "the body is larger than " + MAX_BODY + " bytes"));
            } else {
                buf.appendBuffer(chunk);
            }
        });
        req.endHandler(v -> body.tryComplete(buf));
        req.exceptionHandler(body::tryFail);
        return body.future();
    }

    private static Future<Void> json(HttpServerRequest req, int status, JsonObject body) {
        return req.response().setStatusCode(status).putHeader(HttpHeaders.CONTENT_TYPE, "application/json")
                .putHeader(HttpHeaders.CACHE_CONTROL, "no-store").end(body.encodePrettily() + "\n");
    }

    private static Future<Void> notAllowed(HttpMethod method, String allowed) {
        return Future.failedFuture(new RegistryError(405, "UNSUPPORTED", method + " is not supported here (" + allowed + ")"));
    }

    private static String client(HttpServerRequest req) {
        return req.remoteAddress() == null ? "?" : req.remoteAddress().hostAddress();
    }

}
