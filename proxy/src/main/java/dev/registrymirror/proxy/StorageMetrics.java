package dev.registrymirror.proxy;

import dev.registrymirror.cache.StorageEvents;
import dev.registrymirror.metrics.MirrorMetrics;
import dev.registrymirror.proxy.vertx.Fatal;

/** The storage's events, as metrics. */
final class StorageMetrics implements StorageEvents {
    private final MirrorMetrics metrics;

    StorageMetrics(MirrorMetrics metrics) {
        this.metrics = metrics;
    }

    @Override
    public void evicted(String kind, String reason, long bytes) {
        metrics.evicted(kind, reason, bytes);
    }

    @Override
    public void corruptDropped(String kind) {
        metrics.corruptDropped(kind);
    }

    @Override
    public void indexReady(long items, long bytes, long millis) {
        // logged by the storage; the stored_* gauges show the result
    }

    @Override
    public void failed(String task, Throwable error) {
        if (!Fatal.check("the storage's " + task, error)) { // anything else the storage logs and retries itself
            metrics.storageTaskFailed(task);
        }
    }
}
