package dev.registrymirror.proxy;

import dev.registrymirror.cache.StorageEvents;
import dev.registrymirror.metrics.MirrorMetrics;

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
}
