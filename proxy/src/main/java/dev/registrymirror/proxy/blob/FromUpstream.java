package dev.registrymirror.proxy.blob;

import dev.registrymirror.cache.ContentKind;
import dev.registrymirror.metrics.MirrorMetrics;
import dev.registrymirror.proxy.access.Provenance;
import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.route.Route;
import dev.registrymirror.proxy.upstream.UpstreamClient;
import io.vertx.core.Future;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.HttpServerResponse;

/**
 * The last source: the upstream. A {@code GET} starts the one download of the blob for the request's
 * name (or joins one that started since the walk passed the download under way: {@link
 * InflightDownloads#join} decides atomically) and streams from it. A {@code HEAD} is answered by the
 * upstream under the request's name; its 200 confirms the digest there.
 */
final class FromUpstream implements BlobSource {
    private final InflightDownloads downloads;
    private final DownloadAnswers answers;
    private final MirrorMetrics metrics;
    private final Provenance provenance;

    FromUpstream(InflightDownloads downloads, DownloadAnswers answers, MirrorMetrics metrics, Provenance provenance) {
        this.downloads = downloads;
        this.answers = answers;
        this.metrics = metrics;
        this.provenance = provenance;
    }

    @Override
    public Future<Step> answer(BlobRequest r) {
        if (r.holderOnly()) {
            return Future.failedFuture(new RegistryError(404, "BLOB_UNKNOWN", "blob " + r.digest()
                    + " is not held by this replica"));
        }
        if (r.head()) {
            metrics.cacheMiss("blob");
            return head(r).map(Step.ANSWERED);
        }
        InflightDownloads.Joined joined = downloads.join(r.digest(), r.upstream(), r.route().repository(),
                r.confirmed(), r.ownOnly(), true, !r.fromReplica());
        return switch (joined.outcome()) {
            case STARTED, JOINED -> answers.answer(r, joined.download());
            case UNCONFIRMED -> Future.succeededFuture(Step.CONFIRM);
            case STORED -> Future.succeededFuture(Step.again("blob was stored meanwhile"));
            case NONE -> throw new IllegalStateException("a download is always started or joined here");
        };
    }

    private Future<Void> head(BlobRequest r) {
        Route route = r.route();
        UpstreamClient upstream = r.upstream();
        return upstream.blob(HttpMethod.HEAD, route.repository(), route.digest()).compose(resp -> {
            if (resp.statusCode() != 200) {
                return Future.failedFuture(upstream.failure(resp, "BLOB_UNKNOWN", "blob " + route.digest()));
            }
            UpstreamClient.discard(resp);
            HttpServerResponse out = r.req().response();
            BlobService.blobHeaders(out.headers(), route.digest());
            String length = resp.getHeader(HttpHeaders.CONTENT_LENGTH);
            if (length != null) {
                out.putHeader(HttpHeaders.CONTENT_LENGTH, length);
            }
            return provenance.confirmed(ContentKind.BLOB, route.digest(), r.name()).compose(v -> out.end());
        });
    }
}
