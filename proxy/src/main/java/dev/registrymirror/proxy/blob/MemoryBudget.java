package dev.registrymirror.proxy.blob;

import java.util.concurrent.atomic.AtomicLong;

/**
 * The memory all blob transfers together may hold ({@code server.downloadMemory}): the chunks a
 * download keeps for its readers and those not yet written to its file, the chunks readers have
 * read from a temporary file, and those streamed from an upstream without storing, each counted from
 * the moment it is allocated until its last user (a file write, a socket that sends it) releases it.
 * Over the limit, downloads with writes pending stop reading their upstreams and windows keep no
 * written chunks, so the disk and the sockets catch up before more is taken in.
 */
final class MemoryBudget {
    final long limit;
    private final AtomicLong used = new AtomicLong();
    private final AtomicLong peak = new AtomicLong();

    MemoryBudget(long limit) {
        this.limit = limit;
    }

    void charge(long bytes) {
        long now = used.addAndGet(bytes);
        if (now > peak.get()) {
            peak.accumulateAndGet(now, Math::max);
        }
    }

    void refund(long bytes) {
        used.addAndGet(-bytes);
    }

    long used() {
        return used.get();
    }

    /** The most all transfers together have held at once. */
    long peak() {
        return peak.get();
    }

    /** Whether all transfers together hold more than the limit. */
    boolean over() {
        return used.get() > limit;
    }
}
