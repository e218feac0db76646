package dev.registrymirror.proxy;

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
import java.security.MessageDigest;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Blobs: local first. A hit is sent from its file with {@code sendFile} (zero-copy), {@code Range}
 * and {@code HEAD} answered locally. A miss joins the one download of that digest (see
 * {@link InflightDownloads}) and streams from its temporary file as bytes arrive. The last byte of
 * such a response is held back until the blob is verified, so a client never sees a clean end of
 * wrong or short content: a failed download breaks the connection.
 */
final class BlobService {
    private static final Logger LOG = LoggerFactory.getLogger(BlobService.class);
    static final int CHUNK = 256 * 1024;

    private final Vertx vertx;
    private final BlobStore store;
    private final InflightDownloads downloads;
    private final MirrorMetrics metrics;
    private final SingleFlight<Digest, Boolean> verifications = new SingleFlight<>();

    BlobService(Vertx vertx, BlobStore store, InflightDownloads downloads, MirrorMetrics metrics) {
        this.vertx = vertx;
        this.store = store;
        this.downloads = downloads;
        this.metrics = metrics;
    }

    /**
     * Answers a blob request. Fails with a {@link RegistryError} only while nothing has been sent;
     * after that, failures break the connection.
     */
    Future<Void> serve(Route route, UpstreamClient upstream, HttpServerRequest req) {
        return serve(route, upstream, req, 0);
    }

    private Future<Void> serve(Route route, UpstreamClient upstream, HttpServerRequest req, int attempt) {
        boolean head = req.method() == HttpMethod.HEAD;
        return vertx.executeBlocking(() -> head ? store.find(route.digest()) : store.acquire(route.digest()), false)
                .compose(found -> {
                    if (found.isPresent()) {
                        return serveStored(route, upstream, req, attempt, found.get());
                    }
                    metrics.cacheMiss("blob");
                    if (head) {
                        return headUpstream(route, upstream, req);
                    }
                    Download d = downloads.join(route.digest(), upstream, route.repository());
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
     * turns out wrong is dropped and fetched again. The file stays pinned until it is sent.
     */
    private Future<Void> serveStored(Route route, UpstreamClient upstream, HttpServerRequest req, int attempt,
                                     BlobStore.Blob blob) {
        if (req.method() == HttpMethod.HEAD) {
            metrics.cacheHit("blob");
            return sendStored(blob, req);
        }
        Future<Boolean> good = blob.verified() ? Future.succeededFuture(true)
                : verifications.run(blob.digest(), () -> vertx.executeBlocking(() -> store.verify(blob), false));
        return good.compose(ok -> {
            if (!ok) {
                store.release(blob);
                return retry(route, upstream, req, attempt, "stored blob was damaged; fetch restarting");
            }
            metrics.cacheHit("blob");
            return sendStored(blob, req).eventually(() -> {
                store.release(blob);
                return Future.succeededFuture();
            }).recover(err -> {
                if (req.response().headWritten()) {
                    return Future.failedFuture(err);
                }
                // The file vanished between lookup and open (deleted by hand): fetch it again.
                return vertx.executeBlocking(() -> {
                    store.forget(blob);
                    return null;
                }, false).compose(v -> retry(route, upstream, req, attempt, "stored blob vanished"));
            });
        }, err -> {
            store.release(blob);
            return Future.failedFuture(err);
        });
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

    static void blobHeaders(MultiMap headers, Digest digest) {
        headers.set(HttpHeaders.CONTENT_TYPE, "application/octet-stream")
                .set("Docker-Content-Digest", digest.toString())
                .set(HttpHeaders.ETAG, "\"" + digest + "\"")
                .set(HttpHeaders.ACCEPT_RANGES, "bytes")
                .set(HttpHeaders.CACHE_CONTROL, "max-age=31536000");
    }

    /** One client reading a download as it grows. Runs on the client's context. */
    private final class Follower {
        private final Download d;
        private final HttpServerRequest req;
        private final HttpServerResponse resp;
        private final Context context;
        private final UpstreamClient upstream;
        private final Route route;
        /** Completes when the first byte goes out; fails while nothing has, so the handler can answer. */
        private final Promise<Void> started = Promise.promise();
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
                Path temp = d.temp();
                return vertx.executeBlocking(() -> FileChannel.open(temp, StandardOpenOption.READ), false)
                        .compose(f -> {
                            unreserve();
                            file = f;
                            respond(snapshot.size());
                            return started.future();
                        }, err -> {
                            unreserve();
                            return Future.failedFuture(new RegistryError(500, "UNKNOWN", "cannot read the cache"));
                        });
            });
        }

        private Future<Download.Snapshot> headersKnown() {
            Download.Snapshot s = d.snapshot();
            if (s.state() != Download.State.CONNECTING) {
                return Future.succeededFuture(s);
            }
            return d.await(context, s.state(), s.available()).compose(v -> headersKnown());
        }

        private void respond(long size) {
            blobHeaders(resp.headers(), d.digest);
            ByteRange range = null;
            if (size >= 0) {
                try {
                    range = ByteRange.parse(req.getHeader("Range"), size);
                } catch (RegistryError e) {
                    range = null;
                }
            }
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

        private void pump() {
            if (stopped || reading) {
                return; // one read at a time: a second one would send its bytes twice
            }
            Download.Snapshot s = d.snapshot();
            if (s.state() == Download.State.FAILED) {
                if (!started.future().isComplete() && !resp.headWritten()) {
                    // Nothing sent yet: answer with an error, or from the upstream if only the disk failed.
                    stopped = true;
                    closeFile();
                    resp.headers().clear();
                    resp.setStatusCode(200).setChunked(false);
                    (s.failure() instanceof StorageUnavailable ? passThrough(route, upstream, req)
                            : Future.<Void>failedFuture(s.failure())).onComplete(started);
                    return;
                }
                stop(true);
                return;
            }
            boolean done = s.state() == Download.State.VERIFIED || s.state() == Download.State.DONE;
            long limit = end >= 0 ? Math.min(s.available(), end) : s.available();
            if (!done && end >= 0 && limit == end) {
                limit = end - 1; // hold the last byte back until the blob is verified
            }
            if (position < limit) {
                int len = (int) Math.min(CHUNK, limit - position);
                long at = position;
                reading = true;
                vertx.executeBlocking(() -> read(file, at, len), false).onComplete(ar -> {
                    reading = false;
                    if (stopped) {
                        if (ar.succeeded()) {
                            ar.result().release();
                        }
                        return;
                    }
                    if (ar.failed()) {
                        stop(true);
                        return;
                    }
                    ByteBuf chunk = ar.result();
                    int n = chunk.readableBytes();
                    position = at + n;
                    metrics.bytesFromUpstream(n);
                    started.tryComplete();
                    // Vert.x does not release a buffer it is given: the pooled chunk goes back once written.
                    resp.write(Buffer.buffer(chunk)).onComplete(w -> chunk.release());
                    if (resp.writeQueueFull()) {
                        resp.drainHandler(v -> {
                            resp.drainHandler(null); // Vert.x keeps calling it on every drain otherwise
                            pump();
                        });
                    } else {
                        pump();
                    }
                });
                return;
            }
            if (done && (end < 0 ? position >= s.available() : position >= end)) {
                stopped = true;
                closeFile();
                started.tryComplete();
                resp.end();
                return;
            }
            d.await(context, s.state(), s.available()).onComplete(v -> pump());
        }

        private void closeFile() {
            FileChannel f = file;
            vertx.executeBlocking(() -> {
                f.close();
                return null;
            }, false);
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
            if (file != null) {
                closeFile();
            }
            if (breakConnection) {
                resp.reset();
            }
        }
    }
}
