package dev.registrymirror.proxy.blob;

import dev.registrymirror.proxy.route.Route;
import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.route.ByteRange;
import dev.registrymirror.proxy.upstream.UpstreamClient;
import dev.registrymirror.proxy.vertx.Futures;
import dev.registrymirror.proxy.vertx.Blocking;
import dev.registrymirror.proxy.vertx.SingleFlight;

import dev.registrymirror.cache.BlobStore;
import dev.registrymirror.cache.Digest;
import dev.registrymirror.metrics.MirrorMetrics;
import io.vertx.core.Context;
import io.vertx.core.Future;
import io.vertx.core.MultiMap;
import io.vertx.core.Promise;
import io.vertx.core.Vertx;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.HttpServerRequest;
import io.vertx.core.http.HttpServerResponse;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.PooledByteBufAllocator;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Optional;
import java.security.MessageDigest;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Blobs: local first. A hit is sent from its file with {@code sendFile} (zero-copy), {@code Range}
 * and {@code HEAD} answered locally; so is a {@code HEAD} for a blob being downloaded whose size is
 * known. A miss joins the one download of that digest (see {@link InflightDownloads}) and streams
 * from its temporary file as bytes arrive. The last byte of
 * such a response is held back until the blob is verified, so a client never sees a clean end of
 * wrong or short content: a failed download breaks the connection.
 */
public final class BlobService {
    private static final Logger LOG = LoggerFactory.getLogger(BlobService.class);
    public static final int CHUNK = 256 * 1024;

    private final Vertx vertx;
    private final Blocking blocking;
    private final BlobStore store;
    private final InflightDownloads downloads;
    private final MirrorMetrics metrics;
    private final SingleFlight<Digest, Boolean> verifications = new SingleFlight<>();

    public BlobService(Vertx vertx, Blocking blocking, BlobStore store, InflightDownloads downloads,
                       MirrorMetrics metrics) {
        this.vertx = vertx;
        this.blocking = blocking;
        this.store = store;
        this.downloads = downloads;
        this.metrics = metrics;
    }

    /**
     * Answers a blob request. Fails with a {@link RegistryError} only while nothing has been sent;
     * after that, failures break the connection.
     */
    public Future<Void> serve(Route route, UpstreamClient upstream, HttpServerRequest req) {
        return serve(route, upstream, req, 0);
    }

    private Future<Void> serve(Route route, UpstreamClient upstream, HttpServerRequest req, int attempt) {
        boolean head = req.method() == HttpMethod.HEAD;
        // A blob the index knows is absent needs no trip to a worker thread before the upstream is asked.
        Future<Optional<BlobStore.Blob>> lookup = store.knownAbsent(route.digest())
                ? Future.succeededFuture(Optional.empty())
                : blocking.run(() -> head ? store.find(route.digest()) : store.acquire(route.digest()));
        return lookup
                .compose(found -> {
                    if (found.isPresent()) {
                        return serveStored(route, upstream, req, attempt, found.get());
                    }
                    if (head) {
                        long size = downloads.announcedSize(route.digest());
                        if (size >= 0) {
                            // Being downloaded, its size known: answered here, like a hit.
                            metrics.cacheHit("blob");
                            blobHeaders(req.response().headers(), route.digest());
                            return req.response().putHeader(HttpHeaders.CONTENT_LENGTH, Long.toString(size)).end();
                        }
                        metrics.cacheMiss("blob");
                        return headUpstream(route, upstream, req);
                    }
                    Download d = downloads.join(route.digest(), upstream, route.repository());
                    if (d == null) {
                        return retry(route, upstream, req, attempt, "blob was stored meanwhile");
                    }
                    Download.State state = d.snapshot().state();
                    if (state == Download.State.VERIFIED || state == Download.State.DONE) {
                        metrics.cacheHit("blob"); // all there and verified, the commit under way
                    } else {
                        metrics.cacheMiss("blob");
                    }
                    if (!d.reserve()) {
                        return retry(route, upstream, req, attempt, "blob download is restarting");
                    }
                    return new Follower(d, req, upstream, route, vertx.getOrCreateContext()).start();
                });
    }

    private Future<Void> retry(Route route, UpstreamClient upstream, HttpServerRequest req, int attempt, String why) {
        if (attempt >= 2) {
            return Future.failedFuture(new RegistryError(503, "UNAVAILABLE", why));
        }
        return serve(route, upstream, req, attempt + 1);
    }

    /**
     * A hit. A blob not hashed since start is hashed first (once, however many ask), and one that
     * turns out wrong is dropped and fetched again. The file stays pinned until it is sent, failed or
     * not: one release, whatever happens on the way (an unsatisfiable range used to skip it).
     */
    private Future<Void> serveStored(Route route, UpstreamClient upstream, HttpServerRequest req, int attempt,
                                     BlobStore.Blob blob) {
        if (req.method() == HttpMethod.HEAD) {
            metrics.cacheHit("blob");
            return Futures.attempt(() -> sendStored(blob, req)); // found, not pinned: nothing to release
        }
        Future<Boolean> good = blob.verified() ? Future.succeededFuture(true)
                : verifications.run(blob.digest(), () -> blocking.hash(() -> store.verify(blob)));
        return good.compose(ok -> {
                    if (!ok) {
                        return Future.<Void>failedFuture(new Damaged());
                    }
                    metrics.cacheHit("blob");
                    return Futures.attempt(() -> sendStored(blob, req));
                })
                .andThen(ar -> store.release(blob))
                .recover(err -> {
                    if (err instanceof Damaged) {
                        return retry(route, upstream, req, attempt, "stored blob was damaged; fetch restarting");
                    }
                    if (req.response().headWritten() || err instanceof RegistryError) {
                        return Future.failedFuture(err);
                    }
                    // The file vanished between lookup and open (deleted by hand): fetch it again.
                    return blocking.run(() -> {
                        store.forget(blob);
                        return null;
                    }).compose(v -> retry(route, upstream, req, attempt, "stored blob vanished"));
                });
    }

    /** A stored blob did not match its digest; it was dropped. */
    private static final class Damaged extends RuntimeException {
        private static final long serialVersionUID = 1L;

        Damaged() {
            super("stored blob was damaged", null, false, false);
        }
    }

    private Future<Void> sendStored(BlobStore.Blob blob, HttpServerRequest req) {
        HttpServerResponse resp = req.response();
        ByteRange range = ByteRange.parse(req.getHeader("Range"), blob.size());
        blobHeaders(resp.headers(), blob.digest());
        long offset = 0;
        long length = blob.size();
        if (range != null) {
            resp.setStatusCode(206).putHeader(HttpHeaders.CONTENT_RANGE, range.contentRange(blob.size()));
            offset = range.start();
            length = range.length();
        }
        resp.putHeader(HttpHeaders.CONTENT_LENGTH, Long.toString(length));
        if (req.method() == HttpMethod.HEAD) {
            return resp.end();
        }
        long sent = length;
        return resp.sendFile(blob.path().toString(), offset, length).onSuccess(v -> metrics.bytesFromCache(sent));
    }

    /**
     * The cache cannot take this blob (disk full): streams it from the upstream to this one client,
     * hashing as it goes. The last chunk is held back until the digest is checked, so wrong or short
     * content ends in a broken connection, never a clean end.
     */
    private Future<Void> passThrough(Route route, UpstreamClient upstream, HttpServerRequest req) {
        metrics.passThrough();
        Digest digest = route.digest();
        return upstream.blob(HttpMethod.GET, route.repository(), digest).compose(in -> {
                    if (in.statusCode() != 200) {
                        return Future.failedFuture(upstream.failure(in, "BLOB_UNKNOWN", "blob " + digest));
                    }
                    HttpServerResponse out = req.response();
                    blobHeaders(out.headers(), digest);
                    String length = in.getHeader(HttpHeaders.CONTENT_LENGTH);
                    if (length != null) {
                        out.putHeader(HttpHeaders.CONTENT_LENGTH, length);
                    } else {
                        out.setChunked(true);
                    }
                    MessageDigest hasher = digest.newHasher();
                    Buffer[] held = {null};
                    long[] received = {0};
                    Promise<Void> done = Promise.promise();
                    out.closeHandler(v -> in.request().reset());
                    in.exceptionHandler(err -> {
                        out.reset();
                        done.tryFail(UpstreamClient.transportError(upstream.name(), "upstream", err));
                    });
                    in.handler(chunk -> {
                        received[0] += chunk.length();
                        metrics.upstreamBytes(upstream.name(), chunk.length());
                        UpstreamClient.hash(hasher, chunk);
                        if (held[0] != null) {
                            metrics.bytesFromUpstream(held[0].length());
                            out.write(held[0]);
                        }
                        held[0] = chunk;
                        if (out.writeQueueFull()) {
                            in.pause();
                            out.drainHandler(v -> in.resume());
                        }
                    });
                    in.endHandler(v -> {
                        boolean lengthOk = length == null || Long.toString(received[0]).equals(length.trim());
                        if (!lengthOk || !digest.matches(hasher.digest())) {
                            String reason = lengthOk ? "digest_mismatch" : "reset";
                            String why = lengthOk ? "upstream bytes do not match " + digest
                                    : "upstream body ended after " + received[0] + " of " + length + " bytes";
                            metrics.upstreamError(upstream.name(), reason);
                            LOG.warn("upstream {}: blob {} streamed without storing was wrong ({}); connection broken",
                                    upstream.name(), digest, why);
                            out.reset();
                            done.tryFail(RegistryError.badGateway(upstream.name(), why, reason));
                            return;
                        }
                        if (held[0] != null) {
                            metrics.bytesFromUpstream(held[0].length());
                        }
                        (held[0] != null ? out.end(held[0]) : out.end()).onComplete(done);
                    });
                    in.resume();
                    return done.future();
                });
    }

    private Future<Void> headUpstream(Route route, UpstreamClient upstream, HttpServerRequest req) {
        return upstream.blob(HttpMethod.HEAD, route.repository(), route.digest())
                .compose(resp -> {
                    if (resp.statusCode() != 200) {
                        return Future.failedFuture(upstream.failure(resp, "BLOB_UNKNOWN", "blob " + route.digest()));
                    }
                    UpstreamClient.discard(resp);
                    HttpServerResponse out = req.response();
                    blobHeaders(out.headers(), route.digest());
                    String length = resp.getHeader(HttpHeaders.CONTENT_LENGTH);
                    if (length != null) {
                        out.putHeader(HttpHeaders.CONTENT_LENGTH, length);
                    }
                    return out.end();
                });
    }

    /**
     * Reads up to {@code len} bytes at {@code position} into a pooled direct buffer, which the socket
     * write then takes without another copy. Blocks: call it on a worker thread.
     */
    private static ByteBuf read(FileChannel file, long position, int len) throws java.io.IOException {
        ByteBuf buf = PooledByteBufAllocator.DEFAULT.directBuffer(len, len);
        try {
            while (buf.isWritable()) {
                int n = buf.writeBytes(file, position + buf.writerIndex(), buf.writableBytes());
                if (n < 0) {
                    break;
                }
            }
            return buf;
        } catch (java.io.IOException | RuntimeException e) {
            buf.release();
            throw e;
        }
    }

    public static void blobHeaders(MultiMap headers, Digest digest) {
        headers.set(HttpHeaders.CONTENT_TYPE, "application/octet-stream")
                .set("Docker-Content-Digest", digest.toString())
                .set(HttpHeaders.ETAG, "\"" + digest + "\"")
                .set(HttpHeaders.ACCEPT_RANGES, "bytes")
                .set(HttpHeaders.CACHE_CONTROL, "max-age=31536000");
    }

    /**
     * One client reading a download as it grows, from the download's window in memory while it
     * keeps up, from the temporary file when it falls behind. Runs on the client's context.
     */
    private final class Follower {
        private final Download d;
        private final HttpServerRequest req;
        private final HttpServerResponse resp;
        private final Context context;
        private final UpstreamClient upstream;
        private final Route route;
        /** Completes when the first byte goes out; fails while nothing has, so the handler can answer. */
        private final Promise<Void> started = Promise.promise();
        /** The temporary file, opened the first time this client falls behind the window. */
        private FileChannel file;
        private boolean reading;
        private boolean reserved = true;
        private boolean stopped;
        private long position;
        /** Exclusive end of what this response carries, -1 when unknown (chunked). */
        private long end = -1;

        Follower(Download d, HttpServerRequest req, UpstreamClient upstream, Route route, Context context) {
            this.d = d;
            this.upstream = upstream;
            this.route = route;
            this.req = req;
            this.resp = req.response();
            this.context = context;
        }

        Future<Void> start() {
            return headersKnown().compose(snapshot -> {
                if (snapshot.state() == Download.State.FAILED) {
                    unreserve();
                    if (snapshot.failure() instanceof StorageUnavailable) {
                        return passThrough(route, upstream, req);
                    }
                    return Future.failedFuture(snapshot.failure());
                }
                ByteRange range;
                try {
                    range = snapshot.size() >= 0 ? ByteRange.parse(req.getHeader("Range"), snapshot.size()) : null;
                } catch (RegistryError e) {
                    unreserve(); // a range wholly outside the blob: 416, as for a stored blob
                    return Future.failedFuture(e);
                }
                respond(snapshot.size(), range);
                return started.future();
            });
        }

        private Future<Download.Snapshot> headersKnown() {
            Download.Snapshot s = d.snapshot();
            if (s.state() != Download.State.CONNECTING) {
                return Future.succeededFuture(s);
            }
            return d.await(context, s).compose(v -> headersKnown());
        }

        /** Starts the response: the whole blob, or {@code range} of it; {@code size} is -1 when not yet known. */
        private void respond(long size, ByteRange range) {
            blobHeaders(resp.headers(), d.digest);
            if (range != null) {
                resp.setStatusCode(206).putHeader(HttpHeaders.CONTENT_RANGE, range.contentRange(size));
                position = range.start();
                end = range.end() + 1;
            } else {
                end = size;
            }
            if (end >= 0) {
                resp.putHeader(HttpHeaders.CONTENT_LENGTH, Long.toString(end - position));
            } else {
                resp.setChunked(true);
            }
            resp.closeHandler(v -> stop(false));
            resp.exceptionHandler(err -> stop(false));
            pump();
        }

        /** Sends what is there, from memory where it can; one file read at a time (a second would send its bytes twice). */
        private void pump() {
            while (!stopped && !reading) {
                Download.Snapshot s = d.snapshot();
                if (s.state() == Download.State.FAILED) {
                    failed(s.failure());
                    return;
                }
                boolean done = s.state() == Download.State.VERIFIED || s.state() == Download.State.DONE;
                long limit = end >= 0 ? Math.min(s.available(), end) : s.available();
                if (!done && end >= 0 && limit == end) {
                    limit = end - 1; // hold the last byte back until the blob is verified
                }
                if (position < limit) {
                    int len = (int) Math.min(CHUNK, limit - position);
                    ByteBuf chunk = d.take(position, len);
                    if (chunk == null) {
                        // Behind the window (or the window is gone): everything before it is in the file.
                        long onDisk = d.snapshot().onDisk();
                        if (onDisk > position) {
                            readFile(position, (int) Math.min(len, onDisk - position));
                            return;
                        }
                        continue; // the download failed meanwhile
                    }
                    if (send(chunk)) {
                        return;
                    }
                    continue;
                }
                if (done && (end < 0 ? position >= s.available() : position >= end)) {
                    stopped = true;
                    closeFile();
                    unreserve();
                    started.tryComplete();
                    resp.end();
                    return;
                }
                d.await(context, s).onComplete(v -> pump());
                return;
            }
        }

        /** Writes a chunk this client now owns; true when the socket is full and pump() will run on drain. */
        private boolean send(ByteBuf chunk) {
            int n = chunk.readableBytes();
            position += n;
            metrics.bytesFromUpstream(n);
            started.tryComplete();
            // Vert.x does not release a buffer it is given: the chunk goes back once written.
            resp.write(Buffer.buffer(chunk)).onComplete(w -> chunk.release());
            if (!resp.writeQueueFull()) {
                return false;
            }
            resp.drainHandler(v -> {
                resp.drainHandler(null); // Vert.x keeps calling it on every drain otherwise
                pump();
            });
            return true;
        }

        private void readFile(long at, int len) {
            reading = true;
            FileChannel open = file;
            Path temp = d.temp();
            blocking.run(() -> {
                FileChannel ch = open != null ? open : FileChannel.open(temp, StandardOpenOption.READ);
                try {
                    return new FileRead(ch, read(ch, at, len));
                } catch (java.io.IOException | RuntimeException e) {
                    if (open == null) {
                        ch.close();
                    }
                    throw e;
                }
            }).onComplete(ar -> {
                reading = false;
                if (ar.failed()) {
                    if (stopped) {
                        unreserve();
                        return;
                    }
                    if (nothingSent()) {
                        stopped = true;
                        unreserve();
                        started.tryFail(new RegistryError(500, "UNKNOWN", "cannot read the cache"));
                    } else {
                        stop(true);
                    }
                    return;
                }
                if (file == null) {
                    file = ar.result().channel();
                    unreserve(); // the open handle keeps the file readable
                }
                if (stopped) {
                    ar.result().bytes().release();
                    closeFile();
                    return;
                }
                if (!send(ar.result().bytes())) {
                    pump();
                }
            });
        }

        /** Whether nothing of the response went out yet, so the request can still get an error or go upstream. */
        private boolean nothingSent() {
            return !started.future().isComplete() && !resp.headWritten();
        }

        /** The download failed. */
        private void failed(Throwable failure) {
            if (nothingSent()) {
                // Nothing sent yet: answer with an error, or from the upstream if only the disk failed.
                stopped = true;
                closeFile();
                unreserve();
                resp.headers().clear();
                resp.setStatusCode(200).setChunked(false);
                (failure instanceof StorageUnavailable ? passThrough(route, upstream, req)
                        : Future.<Void>failedFuture(failure)).onComplete(started);
                return;
            }
            stop(true);
        }

        private void closeFile() {
            FileChannel f = file;
            file = null;
            if (f != null) {
                blocking.run(() -> {
                    f.close();
                    return null;
                });
            }
        }

        private void unreserve() {
            if (reserved) {
                reserved = false;
                d.release();
            }
        }

        private void stop(boolean breakConnection) {
            if (stopped) {
                return;
            }
            stopped = true;
            started.tryComplete();
            closeFile();
            if (!reading) {
                unreserve();
            } // else the read's completion releases it
            if (breakConnection) {
                resp.reset();
            }
        }
    }

    private record FileRead(FileChannel channel, ByteBuf bytes) {
    }
}
