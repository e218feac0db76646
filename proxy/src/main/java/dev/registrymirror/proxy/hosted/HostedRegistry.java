package dev.registrymirror.proxy.hosted;

import dev.registrymirror.cache.BlobStore;
import dev.registrymirror.cache.Digest;
import dev.registrymirror.cache.HostedStore;
import dev.registrymirror.config.MirrorConfig;
import dev.registrymirror.metrics.MirrorMetrics;
import dev.registrymirror.proxy.blob.BlobService;
import dev.registrymirror.proxy.manifest.ManifestService;
import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.route.RouteParser;
import dev.registrymirror.proxy.upstream.BodyMemory;
import dev.registrymirror.proxy.vertx.Blocking;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.Vertx;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.file.AsyncFile;
import io.vertx.core.file.OpenOptions;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.HttpServerRequest;
import io.vertx.core.http.HttpServerResponse;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Clock;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The registry API of hosted repositories: the push side of the OCI distribution spec (uploads,
 * mounts, manifests) and the pull side served from {@link HostedStore} alone, never from an upstream.
 *
 * <p>Uploads. A session ({@code POST .../blobs/uploads/}) is a file under {@code hosted/uploads},
 * appended to by {@code PATCH} (and a {@code PUT}'s body) as the body streams in, never held in memory;
 * one request per session at a time. The closing {@code PUT ?digest=} hashes the file on a hashing
 * thread and commits it to the store only if it matches. Hashing at the end rather than as chunks
 * arrive keeps a session's state in its file alone (nothing to carry from one request to the next);
 * it reads back what the page cache still holds. Sessions idle for longer than
 * {@code hosted.uploadExpiry} are dropped with their files ({@link #expireUploads}).
 *
 * <p>Implementation note: the sessions map is shared by the event loops; a session's own state
 * changes under its monitor, and its {@code busy} flag makes one request at a time its owner.
 */
public final class HostedRegistry {
    private static final Logger LOG = LoggerFactory.getLogger(HostedRegistry.class);
    /** The most tags one page lists when the client names no {@code n}. */
    static final int MAX_TAGS_PAGE = 10_000;
    private static final Pattern CONTENT_RANGE = Pattern.compile("(?:bytes[ =])?(\\d+)-(\\d+)(?:/\\d+|/\\*)?");

    private final Vertx vertx;
    private final Blocking blocking;
    private final HostedStore store;
    private final MirrorConfig.Hosted config;
    private final BodyMemory bodyMemory;
    private final Clock clock;
    private final long maxBlobSize;
    private final MirrorMetrics metrics;
    /** The cache's blobs: a pushed blob the cache holds is stored once, as a link to the cache's file. */
    private final BlobStore cache;
    private final Map<String, Upload> uploads = new ConcurrentHashMap<>();

    /** An upload session. */
    static final class Upload {
        final String id;
        final String repo;
        /** Bytes in the file. */
        long size;
        /** Epoch milliseconds of the last request. */
        long touched;
        boolean busy;
        boolean gone;

        Upload(String id, String repo, long now) {
            this.id = id;
            this.repo = repo;
            this.touched = now;
        }
    }

    public HostedRegistry(Vertx vertx, Blocking blocking, HostedStore store, BlobStore cache, MirrorConfig.Hosted config,
                          BodyMemory bodyMemory, Clock clock, long maxBlobSize, MirrorMetrics metrics) {
        this.metrics = metrics;
        this.cache = cache;
        metrics.hosted(store::bytes, store::blobCount, store::manifestCount, uploads::size, config.maxSize());
        this.vertx = vertx;
        this.blocking = blocking;
        this.store = store;
        this.config = config;
        this.bodyMemory = bodyMemory;
        this.clock = clock;
        this.maxBlobSize = maxBlobSize;
        relist();
    }

    /** Whether the request changes the repository (a push, or a deletion). */
    public static boolean isPush(HttpServerRequest req) {
        return req.method() != HttpMethod.GET && req.method() != HttpMethod.HEAD;
    }

    /**
     * Answers a request for a hosted repository, whose access was checked; {@code mayPull} tells which
     * other repositories the client may read (a mount's source). Fails with a {@link RegistryError}
     * while nothing was sent. The request must be paused until then: its body is read here.
     */
    public Future<Void> serve(HostedRoute r, HttpServerRequest req, java.util.function.Predicate<String> mayPull) {
        HttpMethod m = req.method();
        return switch (r.kind()) {
            case UPLOADS -> m == HttpMethod.POST ? startUpload(r, req, mayPull) : notAllowed(req, "POST");
            case UPLOAD -> {
                if (m == HttpMethod.PATCH) {
                    yield patch(r, req);
                } else if (m == HttpMethod.PUT) {
                    yield finish(r, req);
                } else if (m == HttpMethod.GET) {
                    yield status(r, req);
                } else if (m == HttpMethod.DELETE) {
                    yield cancel(r, req);
                }
                yield notAllowed(req, "GET, PATCH, PUT, DELETE");
            }
            case BLOB -> m == HttpMethod.GET || m == HttpMethod.HEAD ? blob(r, req)
                    : m == HttpMethod.DELETE ? delete(r, req) : notAllowed(req, "GET, HEAD, DELETE");
            case MANIFEST -> m == HttpMethod.GET || m == HttpMethod.HEAD ? manifest(r, req)
                    : m == HttpMethod.PUT ? putManifest(r, req)
                    : m == HttpMethod.DELETE ? delete(r, req) : notAllowed(req, "GET, HEAD, PUT, DELETE");
            case TAGS -> m == HttpMethod.GET ? tags(r, req) : notAllowed(req, "GET");
            case REFERRERS -> m == HttpMethod.GET ? referrers(r, req) : notAllowed(req, "GET");
        };
    }

    private static Future<Void> notAllowed(HttpServerRequest req, String allowed) {
        return Future.failedFuture(new RegistryError(405, "UNSUPPORTED", req.method() + " is not supported here ("
                + allowed + ")"));
    }

    /**
     * {@code DELETE} of a tag (the manifest stays, by digest), a manifest (with the repository's tags
     * that point at it) or a blob, from one repository: 202, the files going with the next collection.
     * 405 while {@code hosted.delete} is off.
     */
    private Future<Void> delete(HostedRoute r, HttpServerRequest req) {
        if (!config.delete()) {
            return Future.failedFuture(new RegistryError(405, "UNSUPPORTED", "deletion is off for hosted repositories"
                    + " (hosted.delete: false)"));
        }
        return blocking.run(() -> r.kind() == HostedRoute.Kind.BLOB ? store.deleteBlob(r.name(), r.digest())
                : r.tag() != null ? store.deleteTag(r.name(), r.tag()) : store.deleteManifest(r.name(), r.digest()))
                .compose(deleted -> {
                    if (!deleted) {
                        return Future.failedFuture(r.kind() == HostedRoute.Kind.BLOB
                                ? new RegistryError(404, "BLOB_UNKNOWN", "blob " + r.digest() + " is not in " + r.name())
                                : RegistryError.manifestUnknown(r.reference()));
                    }
                    relist();
                    LOG.info("hosted: {} {} deleted from {}", r.kind() == HostedRoute.Kind.BLOB ? "blob"
                            : r.tag() != null ? "tag" : "manifest", r.reference(), r.name());
                    return req.response().setStatusCode(202).putHeader(HttpHeaders.CONTENT_LENGTH, "0").end();
                });
    }

    /** Runs a garbage collection on a worker thread (one at a time: a second call joins the first). */
    public Future<HostedStore.Collected> collect() {
        synchronized (this) {
            if (collecting != null) {
                return collecting;
            }
            collecting = blocking.run(() -> store.collect(config.gcGrace().toMillis()))
                    .andThen(ar -> {
                        synchronized (this) {
                            collecting = null;
                        }
                        if (ar.failed()) {
                            LOG.warn("hosted: garbage collection failed: {}", ar.cause().getMessage());
                            metrics.hostedCollection(false, 0, 0, 0);
                        } else {
                            HostedStore.Collected c = ar.result();
                            metrics.hostedCollection(true, c.manifests(), c.blobs(), c.bytes());
                            relist();
                        }
                    });
            return collecting;
        }
    }

    private Future<HostedStore.Collected> collecting;

    public HostedStore store() {
        return store;
    }

    /** The hosted repositories as last listed (after each change of manifests), for pages that must not block. */
    public List<HostedStore.Repository> repositories() {
        return listed;
    }

    private volatile List<HostedStore.Repository> listed = List.of();
    private final java.util.concurrent.atomic.AtomicBoolean relisting = new java.util.concurrent.atomic.AtomicBoolean();

    /** Lists the repositories again on a worker thread; changes meanwhile coalesce into one more listing. */
    public void relist() {
        if (relisting.compareAndSet(false, true)) {
            blocking.run(() -> {
                relisting.set(false);
                listed = store.repositories();
                return null;
            }).onFailure(err -> LOG.warn("hosted: cannot list repositories: {}", err.getMessage()));
        }
    }

    // ---------------------------------------------------------------- uploads

    private Future<Void> startUpload(HostedRoute r, HttpServerRequest req, java.util.function.Predicate<String> mayPull) {
        String mount = req.getParam("mount");
        String from = req.getParam("from");
        String digest = req.getParam("digest");
        if (mount != null) {
            Digest d = HostedRoute.digest(mount);
            // A source that is not hosted, or that the client may not read, is as one that lacks the blob:
            // the answer is a new session, as the spec says, and tells nothing of what the source holds.
            if (from != null && RouteParser.validName(from) && !from.equals(r.name()) && config.matches(from)
                    && mayPull.test(from)) {
                return blocking.run(() -> store.mount(from, r.name(), d))
                        .compose(found -> found.isPresent() ? created(req, r.name(), d) : open(r, req));
            }
            return open(r, req);
        }
        if (digest != null) {
            Digest d = HostedRoute.digest(digest);
            return newUpload(r.name()).compose(u -> appendBody(u, req).compose(v -> commit(u, d, req)));
        }
        return open(r, req);
    }

    /** Opens a session and answers 202 with its location; a body, if any, is read and dropped. */
    private Future<Void> open(HostedRoute r, HttpServerRequest req) {
        return newUpload(r.name()).compose(u -> {
            release(u);
            return drain(req).compose(v -> accepted(req, u));
        });
    }

    private Future<Upload> newUpload(String repo) {
        String id = UUID.randomUUID().toString();
        Upload u = new Upload(id, repo, clock.millis());
        u.busy = true;
        return blocking.run(() -> store.newUpload(id)).map(path -> {
            uploads.put(id, u);
            LOG.debug("hosted: upload {} started for {}", id, repo);
            return u;
        });
    }

    private Future<Void> patch(HostedRoute r, HttpServerRequest req) {
        Upload u;
        try {
            u = take(r);
        } catch (RegistryError e) {
            return drainThen(req, e);
        }
        RegistryError misplaced = misplaced(u, req);
        if (misplaced != null) {
            release(u);
            return drainThen(req, misplaced);
        }
        return appendBody(u, req).compose(v -> {
            release(u);
            return accepted(req, u);
        }, err -> {
            release(u);
            return Future.failedFuture(err);
        });
    }

    private Future<Void> finish(HostedRoute r, HttpServerRequest req) {
        Upload u;
        try {
            u = take(r);
        } catch (RegistryError e) {
            return drainThen(req, e);
        }
        String text = req.getParam("digest");
        RegistryError refused = text == null || !Digest.isValid(text)
                ? RegistryError.digestInvalid(text == null ? "(none)" : text) : misplaced(u, req);
        if (refused != null) {
            release(u);
            return drainThen(req, refused);
        }
        return appendBody(u, req).compose(v -> commit(u, Digest.parse(text), req), err -> {
            release(u);
            return Future.failedFuture(err);
        });
    }

    /**
     * The error for a chunk (a {@code PATCH}, or a closing {@code PUT} that carries the last one) whose
     * {@code Content-Range} does not start where the upload is ({@code 416}) or cannot be read
     * ({@code 400}); null when it has none or it fits.
     */
    private static RegistryError misplaced(Upload u, HttpServerRequest req) {
        String range = req.getHeader("Content-Range");
        if (range == null) {
            return null;
        }
        Matcher m = CONTENT_RANGE.matcher(range.trim());
        if (!m.matches()) {
            return new RegistryError(400, "BLOB_UPLOAD_INVALID", "Content-Range \"" + range + "\" is not <start>-<end>");
        }
        long start = Long.parseLong(m.group(1));
        return start == u.size ? null : new RegistryError(416, "BLOB_UPLOAD_INVALID", "the upload has " + u.size
                + " bytes (Range: " + range(u) + "); a chunk must start there, not at " + start);
    }

    private Future<Void> status(HostedRoute r, HttpServerRequest req) {
        Upload u = uploads.get(r.uploadId());
        if (u == null || !u.repo.equals(r.name())) {
            return Future.failedFuture(uploadUnknown(r.uploadId()));
        }
        synchronized (u) {
            u.touched = clock.millis();
        }
        return req.response().setStatusCode(204).putHeader("Location", location(u)).putHeader("Range", range(u))
                .putHeader("Docker-Upload-UUID", u.id).end();
    }

    private Future<Void> cancel(HostedRoute r, HttpServerRequest req) {
        Upload u = uploads.get(r.uploadId());
        if (u == null || !u.repo.equals(r.name())) {
            return Future.failedFuture(uploadUnknown(r.uploadId()));
        }
        drop(u);
        return req.response().setStatusCode(204).end();
    }

    /** The session of the route, now owned by this request; a 404 or a 416 (another request holds it). */
    private Upload take(HostedRoute r) {
        Upload u = uploads.get(r.uploadId());
        if (u == null || !u.repo.equals(r.name())) {
            throw uploadUnknown(r.uploadId());
        }
        synchronized (u) {
            if (u.gone) {
                throw uploadUnknown(r.uploadId());
            }
            if (u.busy) {
                throw new RegistryError(416, "BLOB_UPLOAD_INVALID", "another request for upload " + u.id
                        + " is under way");
            }
            u.busy = true;
            u.touched = clock.millis();
        }
        return u;
    }

    private void release(Upload u) {
        synchronized (u) {
            u.busy = false;
            u.touched = clock.millis();
        }
    }

    private void drop(Upload u) {
        synchronized (u) {
            u.gone = true;
        }
        uploads.remove(u.id);
        blocking.run(() -> {
            store.discardUpload(u.id);
            return null;
        });
    }

    private static RegistryError uploadUnknown(String id) {
        return new RegistryError(404, "BLOB_UPLOAD_UNKNOWN", "upload " + id + " is unknown (finished, cancelled or"
                + " expired)");
    }

    /**
     * Appends the request's body to the session's file, streamed (the file's writes pace the reads).
     * A body that would take the blob over {@code storage.maxBlobSize} is refused when announced, and
     * stops the upload when it arrives.
     */
    private Future<Void> appendBody(Upload u, HttpServerRequest req) {
        String length = req.getHeader(HttpHeaders.CONTENT_LENGTH);
        long announced = length != null && length.matches("\\d{1,18}") ? Long.parseLong(length) : -1;
        if (announced == 0 || announced < 0 && req.isEnded()) {
            return Future.succeededFuture();
        }
        if (announced > 0 && u.size + announced > maxBlobSize) {
            drop(u);
            return drainThen(req, new RegistryError(413, "SIZE_INVALID", "the blob would have " + (u.size + announced)
                    + " bytes, over storage.maxBlobSize (" + maxBlobSize + ")"));
        }
        // The quota bounds what an upload may write, not only what it may commit: an upload that could
        // never be committed must not fill the disk first. (Bytes another push commits meanwhile are
        // checked again at the commit.)
        long quotaLeft = store.maxBytes() - store.bytes();
        if (announced > 0 && u.size + announced > quotaLeft) {
            drop(u);
            metrics.hostedRefused("quota");
            return drainThen(req, quotaError(new HostedStore.QuotaExceeded(store.bytes(), u.size + announced,
                    store.maxBytes())));
        }
        Path file = store.uploadFile(u.id);
        return vertx.fileSystem().open(file.toString(), new OpenOptions().setWrite(true).setCreate(false))
                .compose(f -> {
                    continueIfExpected(req);
                    f.setWritePos(u.size);
                    Counting counted = new Counting(f, u.size, Math.min(maxBlobSize, quotaLeft),
                            written -> new HostedStore.QuotaExceeded(store.bytes(), written, store.maxBytes()));
                    // Closed once every write has completed (a pipe ends when the body does, not when the
                    // file has taken it), so that a write the disk refused is seen, and none follows the close.
                    return req.pipeTo(counted).transform(ar -> counted.settled().transform(w -> f.close()).transform(c -> {
                        if (ar.failed() || c.failed() || counted.diskFailure != null) {
                            drop(u);
                            Throwable why = counted.diskFailure != null ? counted.diskFailure
                                    : ar.failed() ? ar.cause() : c.cause();
                            return Future.failedFuture(bodyFailure(why, counted.diskFailure != null || ar.succeeded(), u));
                        }
                        synchronized (u) {
                            u.size = counted.position;
                        }
                        return Future.succeededFuture();
                    }));
                });
    }

    /**
     * What a body that did not reach the file whole answers: the limit it went over, the disk that
     * refused it (503, logged and counted: the client may try again), or the client that went away.
     */
    private RegistryError bodyFailure(Throwable why, boolean disk, Upload u) {
        if (why instanceof RegistryError e) {
            return e;
        }
        if (why instanceof HostedStore.QuotaExceeded q) {
            metrics.hostedRefused("quota");
            return quotaError(q);
        }
        if (disk) {
            metrics.storageError(why.getMessage() != null && why.getMessage().contains("space") ? "disk_full" : "io");
            LOG.warn("hosted: cannot write upload {} for {}: {}", u.id, u.repo, why.getMessage());
            return new RegistryError(503, "UNAVAILABLE", "cannot store the upload: " + why.getMessage());
        }
        return new RegistryError(400, "BLOB_UPLOAD_INVALID", "the upload's body broke off");
    }

    /** The file's write stream, counting what passes and refusing what goes over the limit. */
    private final class Counting implements io.vertx.core.streams.WriteStream<Buffer> {
        private final AsyncFile file;
        private final long max;
        private final java.util.function.LongFunction<HostedStore.QuotaExceeded> overQuota;
        long position;

        Counting(AsyncFile file, long start, long max, java.util.function.LongFunction<HostedStore.QuotaExceeded> overQuota) {
            this.file = file;
            this.position = start;
            this.max = max;
            this.overQuota = overQuota;
        }

        /** Writes handed to the file and not yet completed; all on the request's event loop. */
        private int outstanding;
        private boolean stopped;
        private Promise<Void> settled;

        @Override
        public Future<Void> write(Buffer data) {
            if (stopped) {
                return Future.failedFuture(new IllegalStateException("the upload's file is closing"));
            }
            position += data.length();
            if (position > max) {
                return Future.failedFuture(max < maxBlobSize ? overQuota.apply(position)
                        : new RegistryError(413, "SIZE_INVALID", "the blob has more than " + max
                        + " bytes, over storage.maxBlobSize"));
            }
            outstanding++;
            return file.write(data).andThen(ar -> {
                outstanding--;
                if (ar.failed() && diskFailure == null) {
                    diskFailure = ar.cause();
                }
                if (outstanding == 0 && settled != null) {
                    settled.tryComplete();
                }
            });
        }

        /** Why the file refused a write, if it did (else the body failed on the client's side). */
        Throwable diskFailure;

        /** Completes once no write is under way; no write is taken after this is called. */
        Future<Void> settled() {
            stopped = true;
            settled = Promise.promise();
            if (outstanding == 0) {
                settled.complete();
            }
            return settled.future();
        }

        @Override
        public Future<Void> end() {
            return Future.succeededFuture(); // the file is closed by the caller, once settled
        }

        @Override
        public Counting exceptionHandler(io.vertx.core.Handler<Throwable> handler) {
            file.exceptionHandler(e -> {
                if (diskFailure == null) {
                    diskFailure = e;
                }
                handler.handle(e);
            });
            return this;
        }

        @Override
        public Counting setWriteQueueMaxSize(int maxSize) {
            file.setWriteQueueMaxSize(maxSize);
            return this;
        }

        @Override
        public boolean writeQueueFull() {
            return file.writeQueueFull();
        }

        @Override
        public Counting drainHandler(io.vertx.core.Handler<Void> handler) {
            file.drainHandler(handler);
            return this;
        }
    }

    /** Hashes the session's file; if it matches {@code digest}, commits it as the repository's blob (201). */
    private Future<Void> commit(Upload u, Digest digest, HttpServerRequest req) {
        Path file = store.uploadFile(u.id);
        long size;
        synchronized (u) {
            size = u.size;
        }
        return blocking.hash(() -> matches(file, digest)).compose(ok -> {
            if (!ok) {
                drop(u);
                metrics.hostedRefused("invalid");
                return Future.failedFuture(new RegistryError(400, "DIGEST_INVALID", "the uploaded " + size
                        + " bytes do not hash to " + digest));
            }
            return blocking.run(() -> {
                // The cache's copy, if it has one it wrote or hashed since start, pinned while it is linked.
                Optional<BlobStore.Blob> cached = cache.acquire(digest);
                try {
                    Path shared = cached.filter(BlobStore.Blob::verified).map(BlobStore.Blob::path).orElse(null);
                    return store.commitBlob(u.repo, file, digest, size, shared);
                } finally {
                    cached.ifPresent(cache::release);
                }
            });
        }).transform(ar -> {
            if (ar.failed()) {
                drop(u);
                if (ar.cause() instanceof HostedStore.QuotaExceeded q) {
                    metrics.hostedRefused("quota");
                    LOG.warn("hosted: blob {} refused for {}: {}", digest, u.repo, q.getMessage());
                    return Future.failedFuture(quotaError(q));
                }
                return Future.failedFuture(ar.cause());
            }
            uploads.remove(u.id);
            metrics.hostedPushed("blob", size);
            LOG.info("hosted: blob {} ({} bytes) pushed to {}", digest, size, u.repo);
            return created(req, u.repo, digest);
        });
    }

    private static boolean matches(Path file, Digest digest) throws IOException {
        MessageDigest md = digest.newHasher();
        byte[] buf = new byte[256 * 1024];
        try (InputStream in = Files.newInputStream(file)) {
            int n;
            while ((n = in.read(buf)) > 0) {
                md.update(buf, 0, n);
            }
        }
        return digest.matches(md.digest());
    }

    private static Future<Void> created(HttpServerRequest req, String repo, Digest digest) {
        return req.response().setStatusCode(201).putHeader("Location", "/v2/" + repo + "/blobs/" + digest)
                .putHeader("Docker-Content-Digest", digest.toString()).putHeader(HttpHeaders.CONTENT_LENGTH, "0").end();
    }

    private static Future<Void> accepted(HttpServerRequest req, Upload u) {
        return req.response().setStatusCode(202).putHeader("Location", location(u)).putHeader("Range", range(u))
                .putHeader("Docker-Upload-UUID", u.id).putHeader(HttpHeaders.CONTENT_LENGTH, "0").end();
    }

    private static String location(Upload u) {
        return "/v2/" + u.repo + "/blobs/uploads/" + u.id;
    }

    /** The bytes received so far, as the spec's {@code Range} header says it ({@code 0-0} for none). */
    private static String range(Upload u) {
        long size;
        synchronized (u) {
            size = u.size;
        }
        return "0-" + Math.max(0, size - 1);
    }

    /** Reads and drops what is left of the request's body, then completes. */
    private static Future<Void> drain(HttpServerRequest req) {
        if (req.isEnded()) {
            return Future.succeededFuture();
        }
        Promise<Void> done = Promise.promise();
        req.handler(b -> { });
        req.endHandler(v -> done.tryComplete());
        req.exceptionHandler(done::tryFail);
        req.resume();
        return done.future();
    }

    /** Fails with {@code e}, the connection closed after the answer if the body was not read. */
    private static Future<Void> drainThen(HttpServerRequest req, RegistryError e) {
        if (!req.isEnded()) {
            req.response().putHeader(HttpHeaders.CONNECTION, "close");
        }
        return Future.failedFuture(e);
    }

    /** Drops sessions idle for longer than {@code hosted.uploadExpiry}, with their files; yields how many. */
    public int expireUploads() {
        long cutoff = clock.millis() - config.uploadExpiry().toMillis();
        int n = 0;
        for (Upload u : List.copyOf(uploads.values())) {
            boolean stale;
            synchronized (u) {
                stale = !u.busy && u.touched < cutoff;
            }
            if (stale) {
                drop(u);
                n++;
            }
        }
        if (n > 0) {
            LOG.info("hosted: {} unfinished uploads expired (idle for over {})", n, config.uploadExpiry());
        }
        return n;
    }

    /** Sessions open now. */
    public int openUploads() {
        return uploads.size();
    }

    // ---------------------------------------------------------------- pulls

    private Future<Void> blob(HostedRoute r, HttpServerRequest req) {
        return blocking.run(() -> store.blob(r.name(), r.digest())).compose(found -> {
            if (found.isEmpty()) {
                return Future.failedFuture(new RegistryError(404, "BLOB_UNKNOWN", "blob " + r.digest()
                        + " is not in " + r.name()));
            }
            HostedStore.Item blob = found.get();
            return BlobService.sendFile(req, blob.digest(), blob.path(), blob.size()).mapEmpty();
        });
    }

    private Future<Void> manifest(HostedRoute r, HttpServerRequest req) {
        return blocking.run(() -> {
            Optional<HostedStore.Item> found = r.tag() != null ? store.tagged(r.name(), r.tag())
                    : store.manifest(r.name(), r.digest());
            if (found.isEmpty()) {
                return null;
            }
            return new Read(found.get(), req.method() == HttpMethod.HEAD ? null : store.read(found.get()));
        }).compose(read -> {
            if (read == null) {
                return Future.failedFuture(RegistryError.manifestUnknown(r.reference()));
            }
            HttpServerResponse resp = req.response();
            resp.putHeader(HttpHeaders.CONTENT_TYPE, read.item().mediaType())
                    .putHeader("Docker-Content-Digest", read.item().digest().toString())
                    .putHeader(HttpHeaders.ETAG, "\"" + read.item().digest() + "\"")
                    .putHeader(HttpHeaders.CONTENT_LENGTH, Long.toString(read.item().size()));
            return read.bytes() == null ? resp.end() : resp.end(Buffer.buffer(read.bytes()));
        });
    }

    private record Read(HostedStore.Item item, byte[] bytes) {
    }

    private Future<Void> putManifest(HostedRoute r, HttpServerRequest req) {
        String length = req.getHeader(HttpHeaders.CONTENT_LENGTH);
        long announced = length != null && length.matches("\\d{1,18}") ? Long.parseLong(length) : -1;
        int max = ManifestService.MAX_MANIFEST_BYTES;
        if (announced > max) {
            return drainThen(req, new RegistryError(413, "SIZE_INVALID", "the manifest has " + announced
                    + " bytes, over the limit of " + max));
        }
        String contentType = req.getHeader(HttpHeaders.CONTENT_TYPE);
        return bodyMemory.reserve(announced >= 0 ? announced : max).compose(lease ->
                readManifest(req, max).compose(bytes -> blocking.<Stored>run(() -> {
                    PushedManifest parsed = PushedManifest.read(bytes, contentType);
                    Digest digest = Digest.of(r.digest() != null ? r.digest().algorithm() : "sha256", bytes);
                    if (r.digest() != null && !r.digest().equals(digest)) {
                        throw new RegistryError(400, "DIGEST_INVALID", "the manifest hashes to " + digest + ", not "
                                + r.digest());
                    }
                    store.putManifest(r.name(), r.tag(), digest, parsed.mediaType(), bytes, parsed.references());
                    return new Stored(digest, parsed.references().subject(), bytes.length);
                })).andThen(ar -> lease.release())
        ).recover(err -> {
            if (err instanceof HostedStore.QuotaExceeded q) {
                metrics.hostedRefused("quota");
                LOG.warn("hosted: manifest refused for {}: {}", r.name(), q.getMessage());
                return Future.failedFuture(quotaError(q));
            }
            if (err instanceof HostedStore.MissingReference m) {
                metrics.hostedRefused("invalid");
                return Future.failedFuture(new RegistryError(400, m.blob ? "MANIFEST_BLOB_UNKNOWN" : "MANIFEST_INVALID",
                        "manifest names " + m.getMessage() + " " + r.name()));
            }
            if (err instanceof RegistryError e && e.status == 400) {
                metrics.hostedRefused("invalid");
            }
            return Future.failedFuture(err);
        }).compose(stored -> {
            metrics.hostedPushed("manifest", stored.size());
            relist();
            LOG.info("hosted: manifest {} pushed to {}{}", stored.digest(), r.name(),
                    r.tag() != null ? " as " + r.tag() : "");
            HttpServerResponse resp = req.response().setStatusCode(201)
                    .putHeader("Location", "/v2/" + r.name() + "/manifests/" + stored.digest())
                    .putHeader("Docker-Content-Digest", stored.digest().toString())
                    .putHeader(HttpHeaders.CONTENT_LENGTH, "0");
            if (stored.subject() != null) {
                resp.putHeader("OCI-Subject", stored.subject().toString());
            }
            return resp.end();
        });
    }

    private record Stored(Digest digest, Digest subject, long size) {
    }

    /**
     * Over the quota: 403 DENIED, as Harbor and Distribution answer a refused push, so that Docker
     * prints the message instead of retrying.
     */
    private static RegistryError quotaError(HostedStore.QuotaExceeded q) {
        return new RegistryError(403, "DENIED", "push refused: " + q.getMessage());
    }

    /**
     * Tells a client that sent {@code Expect: 100-continue} (curl does, for bodies over 1 MiB) to send
     * its body, now that it is wanted; without it, such a client waits a second before sending. A
     * request refused before this point never has its body sent.
     */
    private static void continueIfExpected(HttpServerRequest req) {
        String expect = req.getHeader(HttpHeaders.EXPECT);
        if (expect != null && expect.equalsIgnoreCase("100-continue") && !req.response().headWritten()) {
            req.response().writeContinue();
        }
    }

    /** The request's body, at most {@code max} bytes (a 413 past that). */
    private static Future<byte[]> readManifest(HttpServerRequest req, int max) {
        continueIfExpected(req);
        Promise<byte[]> done = Promise.promise();
        Buffer body = Buffer.buffer();
        req.handler(b -> {
            if (body.length() + b.length() > max) {
                req.response().putHeader(HttpHeaders.CONNECTION, "close");
                done.tryFail(new RegistryError(413, "SIZE_INVALID", "the manifest has more than " + max + " bytes"));
                return;
            }
            if (!done.future().isComplete()) {
                body.appendBuffer(b);
            }
        });
        req.endHandler(v -> done.tryComplete(body.getBytes()));
        req.exceptionHandler(done::tryFail);
        req.resume();
        return done.future();
    }

    private Future<Void> tags(HostedRoute r, HttpServerRequest req) {
        String nText = req.getParam("n");
        String last = req.getParam("last");
        int n;
        try {
            n = nText == null ? MAX_TAGS_PAGE : Math.min(MAX_TAGS_PAGE, Integer.parseInt(nText));
            if (n < 0) {
                throw new NumberFormatException();
            }
        } catch (NumberFormatException e) {
            return Future.failedFuture(new RegistryError(400, "PAGINATION_NUMBER_INVALID", "n=" + nText
                    + " is not a number of tags"));
        }
        return blocking.run(() -> {
            List<String> tags = store.tags(r.name(), last, n);
            return tags.isEmpty() && last == null && !store.repositoryExists(r.name()) ? null : tags;
        }).compose(tags -> {
            if (tags == null) {
                return Future.failedFuture(new RegistryError(404, "NAME_UNKNOWN", "repository " + r.name()
                        + " is not known here"));
            }
            HttpServerResponse resp = req.response().putHeader(HttpHeaders.CONTENT_TYPE, "application/json");
            List<String> page = tags.size() > n ? tags.subList(0, n) : tags;
            if (tags.size() > n && n > 0) {
                resp.putHeader("Link", "</v2/" + r.name() + "/tags/list?n=" + n + "&last="
                        + page.get(page.size() - 1) + ">; rel=\"next\"");
            }
            return resp.end(new JsonObject().put("name", r.name()).put("tags", new JsonArray(page)).toBuffer());
        });
    }

    private Future<Void> referrers(HostedRoute r, HttpServerRequest req) {
        String artifactType = req.getParam("artifactType");
        return blocking.run(() -> store.referrers(r.name(), r.digest(), artifactType)).compose(list -> {
            JsonArray manifests = new JsonArray();
            for (HostedStore.Referrer ref : list) {
                JsonObject d = new JsonObject().put("mediaType", ref.mediaType()).put("digest", ref.digest().toString())
                        .put("size", ref.size());
                if (ref.artifactType() != null) {
                    d.put("artifactType", ref.artifactType());
                }
                if (ref.annotations() != null) {
                    d.put("annotations", new JsonObject(ref.annotations()));
                }
                manifests.add(d);
            }
            HttpServerResponse resp = req.response().putHeader(HttpHeaders.CONTENT_TYPE,
                    "application/vnd.oci.image.index.v1+json");
            if (artifactType != null) {
                resp.putHeader("OCI-Filters-Applied", "artifactType");
            }
            return resp.end(new JsonObject().put("schemaVersion", 2)
                    .put("mediaType", "application/vnd.oci.image.index.v1+json").put("manifests", manifests).toBuffer());
        });
    }
}
