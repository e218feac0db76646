package dev.registrymirror.proxy;

import dev.registrymirror.cache.BlobStore;
import dev.registrymirror.cache.Digest;
import dev.registrymirror.metrics.MirrorMetrics;
import io.vertx.core.Context;
import io.vertx.core.Future;
import io.vertx.core.MultiMap;
import io.vertx.core.Vertx;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.file.AsyncFile;
import io.vertx.core.file.OpenOptions;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.HttpServerRequest;
import io.vertx.core.http.HttpServerResponse;

/**
 * Blobs: local first. A hit is sent from its file with {@code sendFile} (zero-copy), {@code Range}
 * and {@code HEAD} answered locally. A miss joins the one download of that digest (see
 * {@link InflightDownloads}) and streams from its temporary file as bytes arrive. The last byte of
 * such a response is held back until the blob is verified, so a client never sees a clean end of
 * wrong or short content: a failed download breaks the connection.
 */
final class BlobService {
    static final int CHUNK = 128 * 1024;

    private final Vertx vertx;
    private final BlobStore store;
    private final InflightDownloads downloads;
    private final MirrorMetrics metrics;

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
        return vertx.executeBlocking(() -> store.find(route.digest()), false).compose(found -> {
            if (found.isPresent()) {
                metrics.cacheHit("blob");
                return sendStored(found.get(), req);
            }
            metrics.cacheMiss("blob");
            if (req.method() == HttpMethod.HEAD) {
                return headUpstream(route, upstream, req);
            }
            Download d = downloads.join(route.digest(), upstream, route.repository());
            if (!d.reserve()) {
                if (attempt >= 2) {
                    return Future.failedFuture(new RegistryError(503, "UNAVAILABLE", "blob download is restarting"));
                }
                return serve(route, upstream, req, attempt + 1);
            }
            return new Follower(d, req, vertx.getOrCreateContext()).start();
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

    private Future<Void> headUpstream(Route route, UpstreamClient upstream, HttpServerRequest req) {
        String path = "/v2/" + route.repository() + "/blobs/" + route.digest();
        return upstream.send(HttpMethod.HEAD, path, route.repository(), MultiMap.caseInsensitiveMultiMap(), "blob")
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
        private AsyncFile file;
        private boolean reserved = true;
        private boolean stopped;
        private long position;
        /** Exclusive end of what this response carries, -1 when unknown (chunked). */
        private long end = -1;

        Follower(Download d, HttpServerRequest req, Context context) {
            this.d = d;
            this.req = req;
            this.resp = req.response();
            this.context = context;
        }

        Future<Void> start() {
            return headersKnown().compose(snapshot -> {
                if (snapshot.state() == Download.State.FAILED) {
                    unreserve();
                    return Future.failedFuture(snapshot.failure());
                }
                return vertx.fileSystem().open(d.temp().toString(), new OpenOptions().setRead(true).setWrite(false)
                        .setCreate(false)).compose(f -> {
                            unreserve();
                            file = f;
                            respond(snapshot.size());
                            return Future.<Void>succeededFuture();
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
            if (stopped) {
                return;
            }
            Download.Snapshot s = d.snapshot();
            if (s.state() == Download.State.FAILED) {
                stop(true);
                return;
            }
            boolean done = s.state() == Download.State.DONE;
            long limit = end >= 0 ? Math.min(s.available(), end) : s.available();
            if (!done && end >= 0 && limit == end) {
                limit = end - 1; // hold the last byte back until the blob is verified
            }
            if (position < limit) {
                int len = (int) Math.min(CHUNK, limit - position);
                long at = position;
                file.read(Buffer.buffer(len), 0, at, len).onComplete(ar -> {
                    if (stopped) {
                        return;
                    }
                    if (ar.failed()) {
                        stop(true);
                        return;
                    }
                    position = at + ar.result().length();
                    metrics.bytesFromUpstream(ar.result().length());
                    resp.write(ar.result());
                    if (resp.writeQueueFull()) {
                        resp.drainHandler(v -> pump());
                    } else {
                        pump();
                    }
                });
                return;
            }
            if (done && (end < 0 ? position >= s.available() : position >= end)) {
                stopped = true;
                file.close();
                resp.end();
                return;
            }
            d.await(context, s.state(), s.available()).onComplete(v -> pump());
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
            if (file != null) {
                file.close();
            }
            if (breakConnection) {
                resp.reset();
            }
        }
    }
}
