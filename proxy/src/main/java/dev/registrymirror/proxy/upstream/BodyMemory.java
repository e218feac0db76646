package dev.registrymirror.proxy.upstream;

import dev.registrymirror.proxy.route.RegistryError;
import io.vertx.core.Context;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.Vertx;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;

/**
 * The memory that upstream answers held whole (manifests, tag lists, referrers, token answers) may
 * take together ({@code server.bodyMemory}). Each such body reserves room before its first byte is
 * read: twice its announced length, or twice its limit when none is announced (its chunks as they
 * arrive, then the one array they are assembled into); what it did not need is given back once it has
 * arrived, the rest once its reader is done with it (verified, parsed, stored).
 *
 * <p>A body that does not fit waits its turn, first come first served, for at most {@link #MAX_WAIT};
 * past that, or with {@link #MAX_WAITING} bodies already waiting, it is refused with {@code 503} and
 * {@code Retry-After}. So no number of concurrent pulls of large manifests makes the bodies outgrow
 * the heap. When nothing is held, any one body is let in, whatever its size, so none waits forever.
 *
 * <p>Written by hand: a semaphore counts permits, not a FIFO of differently sized requests completed
 * on their own event loops with a deadline each. Thread-safe: bodies are read on every event loop.
 */
public final class BodyMemory {
    /** How long a body waits for room before it is refused. */
    static final Duration MAX_WAIT = Duration.ofSeconds(10);
    /** Bodies waiting at most; more are refused at once. */
    static final int MAX_WAITING = 1000;

    private final Vertx vertx;
    private final long limit;
    private final Duration maxWait;
    private final int maxWaiting;
    private long used;
    private final ArrayDeque<Waiter> waiting = new ArrayDeque<>();

    private static final class Waiter {
        final long bytes;
        final Context context;
        final Promise<Lease> promise = Promise.promise();
        long timer = -1;

        Waiter(long bytes, Context context) {
            this.bytes = bytes;
            this.context = context;
        }
    }

    /** Room held by one body; give it back with {@link #release} (idempotent). */
    public final class Lease {
        private long held;

        private Lease(long held) {
            this.held = held;
        }

        /** Keeps only {@code bytes} of the room (the body turned out smaller than reserved). */
        public void shrink(long bytes) {
            long back;
            synchronized (BodyMemory.this) {
                back = Math.max(0, held - bytes);
                held -= back;
            }
            if (back > 0) {
                give(back);
            }
        }

        public void release() {
            shrink(0);
        }
    }

    /** @param limit bytes all bodies together may take */
    public BodyMemory(Vertx vertx, long limit) {
        this(vertx, limit, MAX_WAIT, MAX_WAITING);
    }

    BodyMemory(Vertx vertx, long limit, Duration maxWait, int maxWaiting) {
        this.vertx = vertx;
        this.limit = limit;
        this.maxWait = maxWait;
        this.maxWaiting = maxWaiting;
    }

    /** {@code server.bodyMemory}, or its default for this heap when -1: an eighth of the heap, 8-128 MiB. */
    public static long limitFor(long configured) {
        return configured >= 0 ? configured
                : Math.min(128L << 20, Math.max(8L << 20, Runtime.getRuntime().maxMemory() / 8));
    }

    public long limit() {
        return limit;
    }

    /** Bytes held now. */
    public synchronized long used() {
        return used;
    }

    /** Bodies waiting for room now. */
    public synchronized int waiting() {
        return waiting.size();
    }

    /**
     * Room for {@code bytes}, now or once it is free (the future completes on the caller's context);
     * fails with a {@code 503} when it does not come within {@link #MAX_WAIT} or too many wait already.
     */
    public Future<Lease> reserve(long bytes) {
        Context context = vertx.getOrCreateContext();
        Waiter w;
        synchronized (this) {
            if (waiting.isEmpty() && (used == 0 || used + bytes <= limit)) {
                used += bytes;
                return Future.succeededFuture(new Lease(bytes));
            }
            if (waiting.size() >= maxWaiting) {
                return Future.failedFuture(busy());
            }
            w = new Waiter(bytes, context);
            waiting.addLast(w);
            w.timer = vertx.setTimer(Math.max(1, maxWait.toMillis()), t -> expire(w));
        }
        return w.promise.future();
    }

    private void expire(Waiter w) {
        boolean removed;
        synchronized (this) {
            removed = waiting.remove(w);
        }
        if (removed) {
            w.context.runOnContext(v -> w.promise.fail(busy()));
        }
    }

    private void give(long bytes) {
        List<Waiter> granted = new ArrayList<>();
        synchronized (this) {
            used -= bytes;
            while (!waiting.isEmpty() && (used == 0 || used + waiting.peekFirst().bytes <= limit)) {
                Waiter w = waiting.pollFirst();
                used += w.bytes;
                granted.add(w);
            }
        }
        for (Waiter w : granted) {
            vertx.cancelTimer(w.timer);
            Lease lease = new Lease(w.bytes);
            w.context.runOnContext(v -> w.promise.complete(lease));
        }
    }

    private RegistryError busy() {
        return new RegistryError(503, "UNAVAILABLE", "the mirror holds as many upstream answers in memory as it may"
                + " (server.bodyMemory); try again shortly", "1", null);
    }
}
