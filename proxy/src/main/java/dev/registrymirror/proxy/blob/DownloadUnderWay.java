package dev.registrymirror.proxy.blob;

import dev.registrymirror.metrics.MirrorMetrics;
import io.vertx.core.Future;
import io.vertx.core.http.HttpHeaders;

/**
 * The second source: a download of the blob already under way on this mirror, if its bytes may go to
 * the request's name ({@link InflightDownloads#join}, which decides in the same atomic step). A
 * {@code HEAD} is answered here once that download knows its size.
 */
final class DownloadUnderWay implements BlobSource {
    private final InflightDownloads downloads;
    private final DownloadAnswers answers;
    private final MirrorMetrics metrics;

    DownloadUnderWay(InflightDownloads downloads, DownloadAnswers answers, MirrorMetrics metrics) {
        this.downloads = downloads;
        this.answers = answers;
        this.metrics = metrics;
    }

    @Override
    public Future<Step> answer(BlobRequest r) {
        if (r.holderOnly()) {
            // Its download may be the very one waiting for the asking replica's answer.
            return Future.succeededFuture(Step.NEXT);
        }
        if (r.head()) {
            long size = downloads.announcedSize(r.digest(), r.name());
            if (size < 0) {
                return Future.succeededFuture(Step.NEXT);
            }
            metrics.cacheHit("blob"); // answered here, like a hit
            BlobService.blobHeaders(r.req().response().headers(), r.digest());
            return r.req().response().putHeader(HttpHeaders.CONTENT_LENGTH, Long.toString(size)).end()
                    .map(Step.ANSWERED);
        }
        InflightDownloads.Joined joined = downloads.join(r.digest(), r.upstream(), r.route().repository(),
                r.confirmed(), r.ownOnly(), false, false);
        return switch (joined.outcome()) {
            case JOINED -> answers.answer(r, joined.download());
            case UNCONFIRMED -> Future.succeededFuture(Step.CONFIRM);
            case STORED -> Future.succeededFuture(Step.again("blob was stored meanwhile"));
            default -> Future.succeededFuture(Step.NEXT);
        };
    }
}
