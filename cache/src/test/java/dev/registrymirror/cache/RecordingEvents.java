package dev.registrymirror.cache;

import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

/** Storage events, written down for assertions. */
final class RecordingEvents implements StorageEvents {
    final List<String> evicted = new CopyOnWriteArrayList<>();
    final List<String> corrupt = new CopyOnWriteArrayList<>();
    volatile long readyItems = -1;
    /** What {@link #failed} was told, in order: "task: error". */
    final java.util.concurrent.BlockingQueue<String> failures = new java.util.concurrent.LinkedBlockingQueue<>();

    @Override
    public void evicted(String kind, String reason, long bytes) {
        evicted.add(kind + "/" + reason + "/" + bytes);
    }

    @Override
    public void corruptDropped(String kind) {
        corrupt.add(kind);
    }

    @Override
    public void indexReady(long items, long bytes, long millis) {
        readyItems = items;
    }

    @Override
    public void failed(String task, Throwable error) {
        failures.add(task + ": " + error);
    }
}
