package dev.registrymirror.proxy.blob;

import dev.registrymirror.cache.BlobStore;
import dev.registrymirror.cache.Digest;
import dev.registrymirror.metrics.MirrorMetrics;
import dev.registrymirror.proxy.route.ByteRange;
import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.route.Route;
import dev.registrymirror.proxy.upstream.Bodies;
import dev.registrymirror.proxy.upstream.UpstreamClient;
import dev.registrymirror.proxy.vertx.Blocking;
import dev.registrymirror.proxy.vertx.Futures;
import dev.registrymirror.proxy.vertx.Owner;
import dev.registrymirror.proxy.vertx.SingleFlight;
import io.vertx.core.Context;
import io.vertx.core.Future;
import io.vertx.core.MultiMap;
import io.vertx.core.Vertx;
import io.vertx.core.http.HttpClientResponse;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.HttpServerRequest;
import io.vertx.core.http.HttpServerResponse;
import java.util.Optional;

/**
 * Blobs: local first. A hit is sent from its file with {@code sendFile} (zero-copy), {@code Range}
 * and {@code HEAD} answered locally; so is a {@code HEAD} for a blob being downloaded whose size is
 * known. A miss joins the one download of that digest (see {@link InflightDownloads}) and streams
 * from it as bytes arrive ({@link DownloadReader}). The last byte of such a response is held back
 * until the blob is verified, so a client never sees a clean end of wrong or short content: a failed
 * download breaks the connection. When the cache cannot take the blob, it is streamed from the
 * upstream to the client, verified the same way.
 */
public final class BlobService {
    /** A range starting more than this beyond what a download has is fetched from the upstream on its own. */
    static final long RANGE_AHEAD_BYTES = 1L << 20;

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
        // The index lives on disk: even a blob that is not stored is looked up on a worker thread.
        Future<Optional<BlobStore.Blob>> lookup =
                blocking.run(() -> head ? store.find(route.digest()) : store.acquire(route.digest()));
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
                    if (d.snapshot().complete()) {
                        metrics.cacheHit("blob"); // all there and verified, the commit under way
                    } else {
                        metrics.cacheMiss("blob");
                    }
                    if (!d.reserve()) {
                        return retry(route, upstream, req, attempt, "blob download is restarting");
                    }
                    return read(d, route, upstream, req);
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
     * A miss: the client reads the one download of this blob ({@link DownloadReader}) once the
     * upstream has answered. Meanwhile the client may leave: then nothing is sent, and no stream from
     * the upstream is started for it. A range that starts far beyond what has arrived is fetched from
     * the upstream on its own instead of waiting for the download to get there.
     */
    private Future<Void> read(Download d, Route route, UpstreamClient upstream, HttpServerRequest req) {
        ClientSink sink = new ClientSink(req.response(), metrics);
        Context context = vertx.getOrCreateContext();
        return headersKnown(d, context, sink).compose(s -> {
            if (sink.closed()) {
                d.release(); // nobody to answer
                return Future.succeededFuture();
            }
            if (s.state() == Download.State.FAILED) {
                d.release();
                return s.failure() instanceof StorageUnavailable ? passThrough(route, upstream, req, sink)
                        : Future.failedFuture(s.failure());
            }
            ByteRange range;
            try {
                range = s.size() >= 0 ? ByteRange.parse(req.getHeader("Range"), s.size()) : null;
            } catch (RegistryError e) {
                d.release(); // a range wholly outside the blob: 416, as for a stored blob
                return Future.failedFuture(e);
            }
            if (range != null && range.start() > s.available() + RANGE_AHEAD_BYTES) {
                return rangeFromUpstream(d, s, range, route, upstream, req, sink);
            }
            return fromDownload(d, s, range, route, upstream, req, sink);
        });
    }

    /** Waits (on {@code context}) until the upstream has answered for {@code d}, or the client has gone. */
    private Future<Download.Snapshot> headersKnown(Download d, Context context, ClientSink sink) {
        Download.Snapshot s = d.snapshot();
        if (s.state() != Download.State.CONNECTING || sink.closed()) {
            return Future.succeededFuture(s);
        }
        return Future.any(d.await(context, s), sink.gone()).compose(v -> headersKnown(d, context, sink));
    }

    private Future<Void> fromDownload(Download d, Download.Snapshot s, ByteRange range, Route route,
                                      UpstreamClient upstream, HttpServerRequest req, ClientSink sink) {
        HttpServerResponse resp = req.response();
        blobHeaders(resp.headers(), d.digest);
        long from = 0;
        long to = s.size();
        if (range != null) {
            resp.setStatusCode(206).putHeader(HttpHeaders.CONTENT_RANGE, range.contentRange(s.size()));
            from = range.start();
            to = range.end() + 1;
        }
        if (to >= 0) {
            resp.putHeader(HttpHeaders.CONTENT_LENGTH, Long.toString(to - from));
        } else {
            resp.setChunked(true);
        }
        Fetch.Settings f = downloads.settings();
        DownloadReader reader = new DownloadReader(d, vertx.getOrCreateContext(), blocking, f.allocator(), f.budget(),
                from, to, to < 0 || to == s.size());
        return Pump.pipe(reader, sink).recover(err -> {
            if (!resp.headWritten() && !sink.closed() && err instanceof StorageUnavailable) {
                // Nothing sent yet and only the disk failed: the upstream can still answer this client.
                resp.headers().clear();
                resp.setStatusCode(200).setChunked(false);
                return passThrough(route, upstream, req, sink);
            }
            return Future.failedFuture(err);
        });
    }

    /**
     * A range far ahead of the download (a lazy-pulling snapshotter reading a layer's table of contents
     * at its end): asked of the upstream on its own, streamed to the client, not stored. No digest
     * covers a range, so its bytes are checked for length only, as they would be from the download.
     * If the upstream does not answer it as a range, the client waits for the download after all.
     */
    private Future<Void> rangeFromUpstream(Download d, Download.Snapshot s, ByteRange range, Route route,
                                           UpstreamClient upstream, HttpServerRequest req, ClientSink sink) {
        Owner owner = Owner.current();
        Digest digest = route.digest();
        return upstream.blobRange(route.repository(), digest, range.start(), range.end()).transform(ar -> {
            HttpClientResponse in = ar.succeeded() ? ar.result() : null;
            String expected = "bytes " + range.start() + "-" + range.end() + "/";
            if (in == null || in.statusCode() != 206 || in.getHeader(HttpHeaders.CONTENT_RANGE) == null
                    || !in.getHeader(HttpHeaders.CONTENT_RANGE).startsWith(expected)) {
                if (in != null) {
                    UpstreamClient.discard(in);
                }
                return fromDownload(d, d.snapshot(), range, route, upstream, req, sink);
            }
            d.release();
            metrics.rangeFromUpstream();
            HttpServerResponse out = req.response();
            blobHeaders(out.headers(), digest);
            out.setStatusCode(206).putHeader(HttpHeaders.CONTENT_RANGE, range.contentRange(s.size()))
                    .putHeader(HttpHeaders.CONTENT_LENGTH, Long.toString(range.length()));
            Fetch.Settings f = downloads.settings();
            UpstreamBody body = new UpstreamBody(owner, vertx, in, upstream, null, "range " + range.start() + "-"
                    + range.end() + " of blob " + digest, range.length(), exactly(range.length()),
                    UpstreamBody.HoldBack.NOTHING, f.budget());
            return Pump.pipe(body, sink);
        });
    }

    /**
     * The cache cannot take this blob (disk full): streams it from the upstream to this one client,
     * hashed as it goes, its end held back until the digest is checked ({@link UpstreamBody}), so wrong
     * or short content ends in a broken connection, never a clean end.
     */
    private Future<Void> passThrough(Route route, UpstreamClient upstream, HttpServerRequest req, ClientSink sink) {
        metrics.passThrough();
        Owner owner = Owner.current();
        Digest digest = route.digest();
        return upstream.blob(HttpMethod.GET, route.repository(), digest).compose(in -> {
            if (in.statusCode() != 200) {
                return Future.failedFuture(upstream.failure(in, "BLOB_UNKNOWN", "blob " + digest));
            }
            if (sink.closed()) {
                UpstreamClient.discard(in);
                return Future.succeededFuture();
            }
            HttpServerResponse out = req.response();
            blobHeaders(out.headers(), digest);
            long announced = Bodies.length(in);
            if (announced >= 0) {
                out.putHeader(HttpHeaders.CONTENT_LENGTH, Long.toString(announced));
            } else {
                out.setChunked(true);
            }
            Fetch.Settings f = downloads.settings();
            UpstreamBody body = new UpstreamBody(owner, vertx, in, upstream, digest, "blob " + digest
                    + " streamed without storing", announced, exactly(announced >= 0 ? announced : f.maxBlobSize()),
                    UpstreamBody.HoldBack.LAST_CHUNK, f.budget());
            return Pump.pipe(body, sink);
        });
    }

    /** A limit of {@code max} bytes, beyond which the answer is a protocol error. */
    private static UpstreamBody.Limit exactly(long max) {
        return UpstreamBody.Limit.fixed(max, received -> new RegistryError(502, "UNAVAILABLE",
                "upstream answer larger than " + max + " bytes"));
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

    public static void blobHeaders(MultiMap headers, Digest digest) {
        headers.set(HttpHeaders.CONTENT_TYPE, "application/octet-stream")
                .set("Docker-Content-Digest", digest.toString())
                .set(HttpHeaders.ETAG, "\"" + digest + "\"")
                .set(HttpHeaders.ACCEPT_RANGES, "bytes")
                .set(HttpHeaders.CACHE_CONTROL, "max-age=31536000");
    }
}
