package dev.registrymirror.proxy.blob;

import dev.registrymirror.cache.BlobStore;
import dev.registrymirror.cache.ContentKind;
import dev.registrymirror.cache.Digest;
import dev.registrymirror.metrics.MirrorMetrics;
import dev.registrymirror.proxy.access.Provenance;
import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.vertx.Blocking;
import dev.registrymirror.proxy.vertx.Futures;
import dev.registrymirror.proxy.vertx.SingleFlight;
import io.vertx.core.Future;
import io.vertx.core.http.HttpServerRequest;
import java.io.IOException;
import java.util.Optional;

/**
 * The first source: the store. A hit is sent from its file with {@code sendFile} (zero-copy),
 * {@code Range} and {@code HEAD} answered here. A blob not hashed since start is hashed first (once,
 * however many ask), and one that turns out wrong is dropped, and the walk starts again. The
 * decision whether the request's name may have the blob ({@link Provenance}) is taken with the
 * blob in hand: found and pinned in the same step.
 */
final class StoredBlobs implements BlobSource {
    private final Blocking blocking;
    private final BlobStore store;
    private final MirrorMetrics metrics;
    private final Provenance provenance;
    private final SingleFlight<Digest, Boolean> verifications = new SingleFlight<>();

    StoredBlobs(Blocking blocking, BlobStore store, MirrorMetrics metrics, Provenance provenance) {
        this.blocking = blocking;
        this.store = store;
        this.metrics = metrics;
        this.provenance = provenance;
    }

    /** A stored blob, and whether it may be served under the request's name (then, for a GET, pinned). */
    private record Found(BlobStore.Blob blob, boolean allowed) {
    }

    @Override
    public Future<Step> answer(BlobRequest r) {
        if (r.attempt() == 0 && !store.mayHold(r.digest())) {
            // Certainly not stored (answered from memory): on to the download, without a worker's hop.
            // A walk that starts again (the blob was stored meanwhile) looks it up whatever this says.
            return Future.succeededFuture(Step.NEXT);
        }
        // The index lives on disk: a blob that may be stored is looked up on a worker thread.
        return blocking.run(() -> lookUp(r)).compose(found -> {
            if (found == null) {
                return Future.succeededFuture(Step.NEXT);
            }
            if (!found.allowed()) {
                // Fetched only for names whose content this one may not have (yet): a HEAD asks the
                // upstream under its own name; a GET confirms the digest there first.
                return Future.succeededFuture(r.head() ? Step.NEXT : Step.CONFIRM);
            }
            return serve(r, found.blob());
        });
    }

    /** On a worker thread; null when the blob is not stored. */
    private Found lookUp(BlobRequest r) throws IOException {
        Optional<BlobStore.Blob> found = r.head() ? store.find(r.digest()) : store.acquire(r.digest());
        if (found.isEmpty()) {
            return null;
        }
        boolean allowed = false;
        try {
            allowed = r.confirmed() || provenance.mayServeStored(ContentKind.BLOB, r.digest(), r.name());
        } finally {
            if (!allowed && !r.head()) {
                store.release(found.get()); // not served: unpinned
            }
        }
        return new Found(found.get(), allowed);
    }

    /** A hit. The file stays pinned until it is sent, failed or not: one release, whatever happens on the way. */
    private Future<Step> serve(BlobRequest r, BlobStore.Blob blob) {
        HttpServerRequest req = r.req();
        if (r.head()) {
            metrics.cacheHit("blob");
            return Futures.attempt(() -> send(blob, req)).map(Step.ANSWERED); // found, not pinned
        }
        Future<Boolean> good = blob.verified() ? Future.succeededFuture(true)
                : verifications.run(blob.digest(), () -> blocking.hash(() -> store.verify(blob)));
        return good.compose(ok -> {
                    if (!ok) {
                        return Future.succeededFuture(Step.again("stored blob was damaged; fetch restarting"));
                    }
                    metrics.cacheHit("blob");
                    return Futures.attempt(() -> send(blob, req)).map(Step.ANSWERED);
                })
                .andThen(ar -> store.release(blob))
                .recover(err -> {
                    if (req.response().headWritten() || err instanceof RegistryError) {
                        return Future.failedFuture(err);
                    }
                    // The file vanished between lookup and open (deleted by hand): fetch it again.
                    return blocking.run(() -> {
                        store.forget(blob);
                        return Step.again("stored blob vanished");
                    });
                });
    }

    private Future<Void> send(BlobStore.Blob blob, HttpServerRequest req) {
        return BlobService.sendFile(req, blob.digest(), blob.path(), blob.size()).map(sent -> {
            if (sent > 0) {
                metrics.bytesFromCache(sent);
            }
            return null;
        });
    }
}
