package dev.registrymirror.proxy.blob;

import dev.registrymirror.cache.BlobStore;
import dev.registrymirror.cache.ContentKind;
import dev.registrymirror.cache.Digest;
import dev.registrymirror.metrics.MirrorMetrics;
import dev.registrymirror.proxy.access.Provenance;
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
    private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(BlobService.class);
    /** A range starting more than this beyond what a download has is fetched from the upstream on its own. */
    static final long RANGE_AHEAD_BYTES = 1L << 20;

    private final Vertx vertx;
    private final Blocking blocking;
    private final BlobStore store;
    private final InflightDownloads downloads;
    private final MirrorMetrics metrics;
    private final SingleFlight<Digest, Boolean> verifications = new SingleFlight<>();
    private final Provenance provenance;

    public BlobService(Vertx vertx, Blocking blocking, BlobStore store, InflightDownloads downloads,
                       MirrorMetrics metrics, Provenance provenance) {
        this.provenance = provenance;
        this.vertx = vertx;
        this.blocking = blocking;
        this.store = store;
        this.downloads = downloads;
        this.metrics = metrics;
    }

    /** One blob request as it walks the chain, and what it has established on the way. */
    private record Ask(Route route, UpstreamClient upstream, HttpServerRequest req, String name, int attempt,
                       boolean confirmed, boolean ownOnly) {
        boolean head() {
            return req.method() == HttpMethod.HEAD;
        }

        Digest digest() {
            return route.digest();
        }

        /** The same request, tried again from the start (at most twice). */
        Ask again() {
            return new Ask(route, upstream, req, name, attempt + 1, confirmed, ownOnly);
        }

        /** The name's upstream said it has the digest: any stored copy or download may serve it. */
        Ask confirmedNow() {
            return new Ask(route, upstream, req, name, attempt, true, ownOnly);
        }

        /** Another name's download failed this request: from now on only its own name's. */
        Ask ownOnlyNow() {
            return new Ask(route, upstream, req, name, attempt, confirmed, true);
        }
    }

    /**
     * Answers a blob request. Fails with a {@link RegistryError} only while nothing has been sent;
     * after that, failures break the connection.
     */
    public Future<Void> serve(Route route, UpstreamClient upstream, HttpServerRequest req) {
        return serve(new Ask(route, upstream, req, Provenance.nameOf(route), 0, false, false));
    }

    /**
     * The lookup order, in one place: the store, else the download under way, else a new download
     * from the upstream. At each step the bytes are handed out only under a name that may have them
     * ({@link Provenance}), decided in that step: with the stored item in hand, and inside the join.
     * A name that may not have them yet is confirmed with its upstream, then the walk starts again.
     */
    private Future<Void> serve(Ask ask) {
        // The index lives on disk: even a blob that is not stored is looked up on a worker thread.
        return blocking.run(() -> lookUp(ask)).compose(found -> {
            if (found == null) {
                return ask.head() ? headOfMiss(ask) : fromDownload(ask);
            }
            if (found.allowed()) {
                return serveStored(ask, found.blob());
            }
            // Stored, but fetched only for names whose content this one may not have (yet).
            return ask.head() ? headUpstream(ask) : confirmThenServe(ask);
        });
    }

    /** A stored blob, and whether it may be served under the request's name (then, for a GET, pinned). */
    private record Found(BlobStore.Blob blob, boolean allowed) {
    }

    /** The store's step of the chain, on a worker thread; null when the blob is not stored. */
    private Found lookUp(Ask ask) throws java.io.IOException {
        Optional<BlobStore.Blob> found = ask.head() ? store.find(ask.digest()) : store.acquire(ask.digest());
        if (found.isEmpty()) {
            return null;
        }
        boolean allowed = false;
        try {
            allowed = ask.confirmed() || provenance.mayServeStored(ContentKind.BLOB, ask.digest(), ask.name());
        } finally {
            if (!allowed && !ask.head()) {
                store.release(found.get()); // not served: unpinned
            }
        }
        return new Found(found.get(), allowed);
    }

    private Future<Void> confirmThenServe(Ask ask) {
        return provenance.confirm(ContentKind.BLOB, ask.route(), ask.upstream()).compose(v -> serve(ask.confirmedNow()));
    }

    /**
     * A {@code HEAD} of a blob that is not stored: answered like a hit when a download of it is under way
     * whose bytes the name may have and whose size is known, else by the upstream.
     */
    private Future<Void> headOfMiss(Ask ask) {
        long size = downloads.announcedSize(ask.digest(), ask.name());
        if (size >= 0) {
            metrics.cacheHit("blob");
            blobHeaders(ask.req().response().headers(), ask.digest());
            return ask.req().response().putHeader(HttpHeaders.CONTENT_LENGTH, Long.toString(size)).end();
        }
        metrics.cacheMiss("blob");
        return headUpstream(ask);
    }

    /** The download's step of the chain: join the one under way, or start one. */
    private Future<Void> fromDownload(Ask ask) {
        InflightDownloads.Joined joined = downloads.join(ask.digest(), ask.upstream(), ask.route().repository(),
                ask.confirmed(), ask.ownOnly());
        switch (joined.outcome()) {
            case STORED:
                return retry(ask, "blob was stored meanwhile");
            case UNCONFIRMED:
                return confirmThenServe(ask);
            default:
                break;
        }
        Download d = joined.download();
        if (d.snapshot().complete()) {
            metrics.cacheHit("blob"); // all there and verified, the commit under way
        } else {
            metrics.cacheMiss("blob");
        }
        if (!d.reserve()) {
            return retry(ask, "blob download is restarting");
        }
        Future<Void> answer = read(d, ask.route(), ask.upstream(), ask.req());
        if (d.source.equals(ask.name())) {
            return answer;
        }
        // Another name's download: its failure (that name's upstream lacks the blob, say) is not this request's.
        return answer.recover(err -> {
            HttpServerResponse resp = ask.req().response();
            if (resp.headWritten() || resp.closed() || err instanceof StorageUnavailable) {
                return Future.failedFuture(err);
            }
            LOG.info("blob {}: the download for {} failed ({}); fetching it for {}", ask.digest(), d.source,
                    err.getMessage(), ask.name());
            clearHead(resp);
            return serve(ask.ownOnlyNow());
        });
    }

    /** Drops what an attempt had set on a response whose head is not yet written; the API version stays. */
    private static void clearHead(HttpServerResponse resp) {
        String version = resp.headers().get(RegistryError.API_VERSION_HEADER);
        resp.headers().clear();
        if (version != null) {
            resp.putHeader(RegistryError.API_VERSION_HEADER, version);
        }
        resp.setStatusCode(200).setChunked(false);
    }

    private Future<Void> retry(Ask ask, String why) {
        if (ask.attempt() >= 2) {
            return Future.failedFuture(new RegistryError(503, "UNAVAILABLE", why));
        }
        return serve(ask.again());
    }

    /**
     * A hit. A blob not hashed since start is hashed first (once, however many ask), and one that
     * turns out wrong is dropped and fetched again. The file stays pinned until it is sent, failed or
     * not: one release, whatever happens on the way (an unsatisfiable range used to skip it).
     */
    private Future<Void> serveStored(Ask ask, BlobStore.Blob blob) {
        HttpServerRequest req = ask.req();
        if (ask.head()) {
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
                        return retry(ask, "stored blob was damaged; fetch restarting");
                    }
                    if (req.response().headWritten() || err instanceof RegistryError) {
                        return Future.failedFuture(err);
                    }
                    // The file vanished between lookup and open (deleted by hand): fetch it again.
                    return blocking.run(() -> {
                        store.forget(blob);
                        return null;
                    }).compose(v -> retry(ask, "stored blob vanished"));
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

    /** A {@code HEAD} answered by the upstream under the request's name; its 200 confirms the digest there. */
    private Future<Void> headUpstream(Ask ask) {
        Route route = ask.route();
        UpstreamClient upstream = ask.upstream();
        return upstream.blob(HttpMethod.HEAD, route.repository(), route.digest())
                .compose(resp -> {
                    if (resp.statusCode() != 200) {
                        return Future.failedFuture(upstream.failure(resp, "BLOB_UNKNOWN", "blob " + route.digest()));
                    }
                    UpstreamClient.discard(resp);
                    HttpServerResponse out = ask.req().response();
                    blobHeaders(out.headers(), route.digest());
                    String length = resp.getHeader(HttpHeaders.CONTENT_LENGTH);
                    if (length != null) {
                        out.putHeader(HttpHeaders.CONTENT_LENGTH, length);
                    }
                    return provenance.confirmed(ContentKind.BLOB, route.digest(), ask.name()).compose(v -> out.end());
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
