package dev.registrymirror.proxy.blob;

import dev.registrymirror.cache.Digest;
import dev.registrymirror.metrics.MirrorMetrics;
import dev.registrymirror.proxy.route.ByteRange;
import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.route.Route;
import dev.registrymirror.proxy.upstream.Bodies;
import dev.registrymirror.proxy.upstream.UpstreamClient;
import dev.registrymirror.proxy.vertx.Blocking;
import dev.registrymirror.proxy.vertx.Owner;
import io.vertx.core.Context;
import io.vertx.core.Future;
import io.vertx.core.Vertx;
import io.vertx.core.http.HttpClientResponse;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.HttpServerRequest;
import io.vertx.core.http.HttpServerResponse;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A request answered from a download of its blob, joined or just started: it streams as the bytes
 * arrive ({@link DownloadReader}), its last byte held back until the blob is verified, so a client
 * never sees a clean end of wrong or short content (a failed download breaks the connection). When
 * the cache cannot take the blob, the upstream answers this client on its own, verified the same way.
 * When a download started for another name fails before anything was sent, the request starts over
 * with downloads of its own name only: another name's failure is never this request's.
 */
final class DownloadAnswers {
    private static final Logger LOG = LoggerFactory.getLogger(DownloadAnswers.class);
    /** A range starting more than this beyond what a download has is fetched from the upstream on its own. */
    static final long RANGE_AHEAD_BYTES = 1L << 20;

    private final Vertx vertx;
    private final Blocking blocking;
    private final InflightDownloads downloads;
    private final MirrorMetrics metrics;

    DownloadAnswers(Vertx vertx, Blocking blocking, InflightDownloads downloads, MirrorMetrics metrics) {
        this.vertx = vertx;
        this.blocking = blocking;
        this.downloads = downloads;
        this.metrics = metrics;
    }

    /** Answers {@code r} from {@code d}, which it joined or started. */
    Future<BlobSource.Step> answer(BlobRequest r, Download d) {
        if (d.snapshot().complete()) {
            metrics.cacheHit("blob"); // all there and verified, the commit under way
        } else {
            metrics.cacheMiss("blob");
        }
        if (!d.reserve()) {
            return Future.succeededFuture(BlobSource.Step.again("blob download is restarting"));
        }
        Future<BlobSource.Step> answered = read(d, r.route(), r.upstream(), r.req()).map(BlobSource.Step.ANSWERED);
        if (d.source.equals(r.name())) {
            return answered;
        }
        // Another name's download: its failure (that name's upstream lacks the blob, say) is not this request's.
        return answered.recover(err -> {
            HttpServerResponse resp = r.req().response();
            if (resp.headWritten() || resp.closed() || err instanceof StorageUnavailable) {
                return Future.failedFuture(err);
            }
            LOG.info("blob {}: the download for {} failed ({}); fetching it for {}", r.digest(), d.source,
                    err.getMessage(), r.name());
            BlobService.clearHead(resp);
            return Future.succeededFuture(BlobSource.Step.OWN_ONLY);
        });
    }

    /**
     * The client reads the download once the upstream has answered. Meanwhile the client may leave:
     * then nothing is sent, and no stream from the upstream is started for it. A range that starts far
     * beyond what has arrived is fetched from the upstream on its own instead of waiting for the
     * download to get there.
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
        BlobService.blobHeaders(resp.headers(), d.digest);
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
                BlobService.clearHead(resp);
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
            BlobService.blobHeaders(out.headers(), digest);
            out.setStatusCode(206).putHeader(HttpHeaders.CONTENT_RANGE, range.contentRange(s.size()))
                    .putHeader(HttpHeaders.CONTENT_LENGTH, Long.toString(range.length()));
            Fetch.Settings f = downloads.settings();
            UpstreamBody body = new UpstreamBody(owner, vertx, in, upstream, null, "range " + range.start() + "-"
                    + range.end() + " of blob " + digest, range.length(), exactly(range.length()), f.budget());
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
            BlobService.blobHeaders(out.headers(), digest);
            long announced = Bodies.length(in);
            if (announced >= 0) {
                out.putHeader(HttpHeaders.CONTENT_LENGTH, Long.toString(announced));
            } else {
                out.setChunked(true);
            }
            Fetch.Settings f = downloads.settings();
            UpstreamBody body = new UpstreamBody(owner, vertx, in, upstream, digest, "blob " + digest
                    + " streamed without storing", announced,
                    exactly(announced >= 0 ? announced : f.maxBlobSize()), f.budget());
            return Pump.pipe(body, sink);
        });
    }

    /** A limit of {@code max} bytes, beyond which the answer is a protocol error. */
    private static UpstreamBody.Limit exactly(long max) {
        return UpstreamBody.Limit.fixed(max, received -> new RegistryError(502, "UNAVAILABLE",
                "upstream answer larger than " + max + " bytes"));
    }
}
