package dev.registrymirror.proxy.hosted;

import static dev.registrymirror.proxy.hosted.PushAnswers.continueIfExpected;
import static dev.registrymirror.proxy.hosted.PushAnswers.announcedLength;
import static dev.registrymirror.proxy.hosted.PushAnswers.quotaError;

import dev.registrymirror.cache.BlobStore;
import dev.registrymirror.cache.Digest;
import dev.registrymirror.cache.HostedStore;
import dev.registrymirror.config.MirrorConfig;
import dev.registrymirror.metrics.MirrorMetrics;
import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.route.RouteParser;
import dev.registrymirror.proxy.vertx.Blocking;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.Vertx;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.file.AsyncFile;
import io.vertx.core.file.OpenOptions;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpServerRequest;
import java.nio.file.Path;
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
 * Blob uploads to hosted repositories: sessions ({@code POST .../blobs/uploads/}), each a file under
 * {@code hosted/uploads}, appended to by {@code PATCH} (and a {@code PUT}'s body) as the body streams
 * in, never held in memory; one request per session at a time; the closing {@code PUT ?digest=}
 * hashes the file on a hashing thread and commits it to the store only if it matches. Monolithic
 * uploads and cross-repository mounts start here too. Sessions idle for longer than
 * {@code hosted.uploadExpiry} are dropped with their files ({@link #expire}).
 *
 * <p>Hashing at the end rather than as chunks arrive keeps a session's state in its file alone
 * (nothing to carry from one request to the next); it reads back what the page cache still holds.
 *
 * <p>Implementation note: the sessions map is shared by the event loops; a session's own state
 * changes under its monitor, and its {@code busy} flag makes one request at a time its owner.
 */
final class Uploads {
    private static final Logger LOG = LoggerFactory.getLogger(Uploads.class);
    private static final Pattern CONTENT_RANGE = Pattern.compile("(?:bytes[ =])?(\\d+)-(\\d+)(?:/\\d+|/\\*)?");

    private final Vertx vertx;
    private final Blocking blocking;
    private final HostedStore store;
    private final MirrorConfig.Hosted config;
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

    Uploads(Vertx vertx, Blocking blocking, HostedStore store, BlobStore cache, MirrorConfig.Hosted config, Clock clock,
            long maxBlobSize, MirrorMetrics metrics) {
        this.vertx = vertx;
        this.blocking = blocking;
        this.store = store;
        this.cache = cache;
        this.config = config;
        this.clock = clock;
        this.maxBlobSize = maxBlobSize;
        this.metrics = metrics;
    }

    // ---------------------------------------------------------------- uploads

    /** {@code POST .../blobs/uploads/}: a session, a monolithic upload ({@code ?digest=}), or a mount. */
    Future<Void> start(HostedRoute r, HttpServerRequest req, java.util.function.Predicate<String> mayPull) {
        String mount = req.getParam("mount");
        String from = req.getParam("from");
        String digest = req.getParam("digest");
        if (mount != null) {
            Digest d = RouteParser.digest(mount);
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
            Digest d = RouteParser.digest(digest);
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

    Future<Void> patch(HostedRoute r, HttpServerRequest req) {
        Upload u;
        try {
            u = take(r);
        } catch (RegistryError e) {
            return Future.failedFuture(e);
        }
        RegistryError misplaced = misplaced(u, req);
        if (misplaced != null) {
            release(u);
            return Future.failedFuture(misplaced);
        }
        return appendBody(u, req).compose(v -> {
            release(u);
            return accepted(req, u);
        }, err -> {
            release(u);
            return Future.failedFuture(err);
        });
    }

    Future<Void> finish(HostedRoute r, HttpServerRequest req) {
        Upload u;
        try {
            u = take(r);
        } catch (RegistryError e) {
            return Future.failedFuture(e);
        }
        String text = req.getParam("digest");
        RegistryError refused = text == null || !Digest.isValid(text)
                ? RegistryError.digestInvalid(text == null ? "(none)" : text) : misplaced(u, req);
        if (refused != null) {
            release(u);
            return Future.failedFuture(refused);
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
        return start == u.size ? null : RegistryError.misplacedChunk("the upload has " + u.size + " bytes; a chunk must"
                + " start there, not at " + start, location(u), range(u));
    }

    Future<Void> status(HostedRoute r, HttpServerRequest req) {
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

    Future<Void> cancel(HostedRoute r, HttpServerRequest req) {
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
        long announced = announcedLength(req);
        if (announced == 0 || announced < 0 && req.isEnded()) {
            return Future.succeededFuture();
        }
        if (announced > 0 && u.size + announced > maxBlobSize) {
            drop(u);
            return Future.failedFuture(new RegistryError(413, "SIZE_INVALID", "the blob would have " + (u.size + announced)
                    + " bytes, over storage.maxBlobSize (" + maxBlobSize + ")"));
        }
        // The quota bounds what an upload may write, not only what it may commit: an upload that could
        // never be committed must not fill the disk first. (Bytes another push commits meanwhile are
        // checked again at the commit.)
        long quotaLeft = store.maxBytes() - store.bytes();
        if (announced > 0 && u.size + announced > quotaLeft) {
            drop(u);
            metrics.hostedRefused("quota");
            return Future.failedFuture(quotaError(new HostedStore.QuotaExceeded(store.bytes(), u.size + announced,
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
        return blocking.hash(() -> digest.check(file).matches()).compose(ok -> {
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

    /** Drops sessions idle for longer than {@code hosted.uploadExpiry}, with their files; yields how many. */
    int expire() {
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
    int open() {
        return uploads.size();
    }
}
