package dev.registrymirror.proxy.blob;

import dev.registrymirror.cache.BlobStore;
import dev.registrymirror.cache.ContentKind;
import dev.registrymirror.cache.Digest;
import dev.registrymirror.metrics.MirrorMetrics;
import dev.registrymirror.proxy.access.Provenance;
import dev.registrymirror.proxy.route.ByteRange;
import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.route.Route;
import dev.registrymirror.proxy.upstream.UpstreamClient;
import dev.registrymirror.proxy.vertx.Blocking;
import io.vertx.core.Future;
import io.vertx.core.MultiMap;
import io.vertx.core.Vertx;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpServerRequest;
import io.vertx.core.http.HttpServerResponse;
import java.util.List;

/**
 * Blobs. A request walks one chain of sources, in this order, until one answers:
 * <ol>
 *   <li>{@link StoredBlobs}: the store;</li>
 *   <li>{@link DownloadUnderWay}: a download of the blob under way on this mirror;</li>
 *   <li>{@link FromOwner}, in a cluster: the replica that owns the blob;</li>
 *   <li>{@link FromUpstream}: the upstream, through a new download (or a {@code HEAD}).</li>
 * </ol>
 * A source may also send the walk back to the start: the blob was stored meanwhile, a stored copy
 * was damaged, the bytes were fetched for another name and this name's upstream must confirm the
 * digest first ({@link Provenance}), or another name's download failed this request. After three
 * walks the answer is a 503. Each source decides about the bytes it hands out in the same step it
 * finds them.
 */
public final class BlobService {
    private final List<BlobSource> sources;
    private final InflightDownloads downloads;
    private final Provenance provenance;

    public BlobService(Vertx vertx, Blocking blocking, BlobStore store, InflightDownloads downloads,
                       MirrorMetrics metrics, Provenance provenance) {
        this.provenance = provenance;
        this.downloads = downloads;
        DownloadAnswers answers = new DownloadAnswers(vertx, blocking, downloads, metrics);
        List<BlobSource> chain = new java.util.ArrayList<>(List.of(new StoredBlobs(blocking, store, metrics, provenance),
                new DownloadUnderWay(downloads, answers, metrics)));
        Replicas replicas = downloads.settings().replicas();
        if (replicas != null) {
            chain.add(new FromOwner(vertx, replicas, downloads, metrics));
        }
        chain.add(new FromUpstream(downloads, answers, metrics, provenance));
        this.sources = List.copyOf(chain);
    }

    /**
     * Answers a blob request. Fails with a {@link RegistryError} only while nothing has been sent;
     * after that, failures break the connection.
     */
    public Future<Void> serve(Route route, UpstreamClient upstream, HttpServerRequest req) {
        return serve(route, upstream, req, false);
    }

    /**
     * @param hop another replica asks ({@code held=1}: for what this one holds on disk only): answered
     *            here, never forwarded again
     */
    public Future<Void> serve(Route route, UpstreamClient upstream, HttpServerRequest req, boolean hop) {
        Replicas.Ask ask = !hop ? null : "1".equals(req.getParam("held")) ? Replicas.Ask.HOLDER : Replicas.Ask.OWNER;
        return walk(new BlobRequest(route, upstream, req, Provenance.nameOf(route), 0, false, false, ask), 0);
    }

    /**
     * Another replica, the first owner of a blob it has just stored, asks this one to keep a second
     * copy ({@code cluster.copies}): a download is started (from that replica's disk, as a past
     * holder) unless the blob is here or under way; answered 202 at once.
     */
    public Future<Void> keepCopy(Route route, UpstreamClient upstream, HttpServerRequest req) {
        InflightDownloads.Joined joined = downloads.join(route.digest(), upstream, route.repository(), true, false,
                true, false);
        return req.response().setStatusCode(joined.outcome() == InflightDownloads.Outcome.STORED ? 200 : 202).end();
    }

    private Future<Void> walk(BlobRequest r, int source) {
        return sources.get(source).answer(r).compose(step -> switch (step.next()) {
            case ANSWERED -> Future.succeededFuture();
            case NEXT -> walk(r, source + 1);
            case AGAIN -> r.attempt() >= 2 ? Future.failedFuture(new RegistryError(503, "UNAVAILABLE", step.why()))
                    : walk(r.again(), 0);
            case CONFIRM -> provenance.confirm(ContentKind.BLOB, r.route(), r.upstream())
                    .compose(v -> walk(r.confirmedNow(), 0));
            case OWN_ONLY -> walk(r.ownOnlyNow(), 0);
        });
    }

    /**
     * Answers a blob from its file: the blob headers, {@code Range} ({@code 206}), {@code HEAD} (no
     * body), else {@code sendFile}. Yields the bytes sent (0 for a {@code HEAD}).
     */
    public static Future<Long> sendFile(HttpServerRequest req, Digest digest, java.nio.file.Path path, long size) {
        HttpServerResponse resp = req.response();
        ByteRange range = ByteRange.parse(req.getHeader("Range"), size);
        blobHeaders(resp.headers(), digest);
        long offset = 0;
        long length = size;
        if (range != null) {
            resp.setStatusCode(206).putHeader(HttpHeaders.CONTENT_RANGE, range.contentRange(size));
            offset = range.start();
            length = range.length();
        }
        resp.putHeader(HttpHeaders.CONTENT_LENGTH, Long.toString(length));
        if (req.method() == io.vertx.core.http.HttpMethod.HEAD) {
            return resp.end().map(0L);
        }
        long sent = length;
        return resp.sendFile(path.toString(), offset, length).map(sent);
    }

    /** The headers of every blob answer. */
    public static void blobHeaders(MultiMap headers, Digest digest) {
        headers.set(HttpHeaders.CONTENT_TYPE, "application/octet-stream")
                .set("Docker-Content-Digest", digest.toString())
                .set(HttpHeaders.ETAG, "\"" + digest + "\"")
                .set(HttpHeaders.ACCEPT_RANGES, "bytes")
                .set(HttpHeaders.CACHE_CONTROL, "max-age=31536000");
    }

    /** Drops what an attempt had set on a response whose head is not yet written; the API version stays. */
    static void clearHead(HttpServerResponse resp) {
        String version = resp.headers().get(RegistryError.API_VERSION_HEADER);
        resp.headers().clear();
        if (version != null) {
            resp.putHeader(RegistryError.API_VERSION_HEADER, version);
        }
        resp.setStatusCode(200).setChunked(false);
    }
}
