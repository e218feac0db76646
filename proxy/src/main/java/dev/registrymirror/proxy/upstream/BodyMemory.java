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
 * take together ({@code server.bodyMemory}).
 *
 * <p>An exchange whose answer is read whole takes {@link #PAUSED_BYTES} before its request is sent:
 * what its answer may buffer while it waits, paused, for more. Once the answer's head has come, the
 * room grows to twice the announced length (twice the limit when none is announced): the pieces as
 * they arrive, then the one array they are put together in. What was not needed goes back once the
 * body has arrived, the rest once its reader is done with it (verified, parsed, stored).
 *
 * <p>Whoever finds no room waits its turn, first come first served, for at most {@link #MAX_WAIT};
 * past that, or with {@link #MAX_WAITING} waiting already, it is refused with {@code 503} and
 * {@code Retry-After}. So no number of concurrent pulls makes these bodies outgrow the heap. One
 * that waits to grow holds room already; when everything held belongs to such waiters, nothing would
 * ever be given back, so the first in line is let in anyway: the bound is then exceeded by at most
 * one body, and the mirror never stalls.
 *
 * <p>Written by hand: a semaphore counts permits, not a line of differently sized requests (some
 * holding room already) completed on their own event loops with a deadline each. Thread-safe:
 * answers are read on every event loop.
 */
public final class BodyMemory {
    /** What an answer read whole may buffer while paused: 16 pieces of 16 KiB (see UpstreamClient). */
    public static final long PAUSED_BYTES = 16L * UpstreamClient.WHOLE_BODY_CHUNK_BYTES;
    /** How long one waits for room before it is refused. */
    static final Duration MAX_WAIT = Duration.ofSeconds(10);
    /** Waiting at most; more are refused at once. */
    static final int MAX_WAITING = 1000;

    private final Vertx vertx;
    private final long limit;
    private final Duration maxWait;
    private final int maxWaiting;
    private long used;
    /** Room held by those waiting to grow. */
    private long heldByWaiters;
    private final ArrayDeque<Waiter> waiting = new ArrayDeque<>();
    /** The room of token answers (a quarter of this one's, at least 1 MiB), which are read while other room is held. */
    private final BodyMemory tokens;

    /** One waiting for {@code need} more bytes: a new lease ({@code lease} null), or one growing. */
    private static final class Waiter {
        final long need;
        final Lease lease;
        final long held;
        final Context context;
        final Promise<Lease> promise = Promise.promise();
        long timer = -1;

        Waiter(long need, Lease lease, long held, Context context) {
            this.need = need;
            this.lease = lease;
            this.held = held;
            this.context = context;
        }
    }

    /** Room held by one exchange; give it back with {@link #release} (idempotent). */
    public final class Lease {
        private long held;

        private Lease(long held) {
            this.held = held;
        }

        /** Waits until this lease holds at least {@code bytes} (or fails with a 503, keeping what it held). */
        public Future<Void> growTo(long bytes) {
            long need;
            synchronized (BodyMemory.this) {
                need = bytes - held;
            }
            return need <= 0 ? Future.succeededFuture() : take(need, this).mapEmpty();
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
        this(vertx, limit, maxWait, maxWaiting, true);
    }

    private BodyMemory(Vertx vertx, long limit, Duration maxWait, int maxWaiting, boolean withTokens) {
        this.vertx = vertx;
        this.limit = limit;
        this.maxWait = maxWait;
        this.maxWaiting = maxWaiting;
        this.tokens = withTokens ? new BodyMemory(vertx, Math.max(1L << 20, limit / 4), maxWait, maxWaiting, false) : null;
    }

    /**
     * The room of token answers. A token is fetched by an exchange that holds room here already:
     * were its answer to wait in this line too, all room could be held by exchanges waiting for
     * tokens, and none would ever be given back.
     */
    public BodyMemory tokens() {
        return tokens != null ? tokens : this;
    }

    /** {@code server.bodyMemory}, or its default for this heap when -1: an eighth of the heap, 8-128 MiB. */
    public static long limitFor(long configured) {
        return configured >= 0 ? configured
                : Math.min(128L << 20, Math.max(8L << 20, Runtime.getRuntime().maxMemory() / 8));
    }

    public long limit() {
        return limit;
    }

    /** Bytes held now, token answers included. */
    public long used() {
        long own;
        synchronized (this) {
            own = used;
        }
        return tokens != null ? own + tokens.used() : own;
    }

    /** Exchanges waiting for room now. */
    public synchronized int waiting() {
        return waiting.size();
    }

    /**
     * Room for {@code bytes}, now or once it is free (the future completes on the caller's context);
     * fails with a {@code 503} when it does not come within {@link #MAX_WAIT} or too many wait already.
     */
    public Future<Lease> reserve(long bytes) {
        return take(bytes, null);
    }

    private Future<Lease> take(long need, Lease growing) {
        Context context = vertx.getOrCreateContext();
        Waiter w;
        List<Waiter> granted;
        synchronized (this) {
            if (waiting.isEmpty() && fits(need)) {
                used += need;
                if (growing == null) {
                    return Future.succeededFuture(new Lease(need));
                }
                growing.held += need;
                return Future.succeededFuture(growing);
            }
            if (waiting.size() >= maxWaiting) {
                return Future.failedFuture(busy());
            }
            w = new Waiter(need, growing, growing == null ? 0 : growing.held, context);
            waiting.addLast(w);
            heldByWaiters += w.held;
            w.timer = vertx.setTimer(Math.max(1, maxWait.toMillis()), t -> expire(w));
            granted = grant(); // now all room may be held by those in line: then the first goes ahead
        }
        complete(granted);
        return w.promise.future();
    }

    /**
     * Whether the first in line may have {@code need} more: it fits, or everything held belongs to
     * those waiting to grow (nobody else would ever give any back).
     */
    private boolean fits(long need) {
        return used + need <= limit || used == heldByWaiters;
    }

    private void expire(Waiter w) {
        boolean removed;
        List<Waiter> granted;
        synchronized (this) {
            removed = waiting.remove(w);
            if (removed) {
                heldByWaiters -= w.held;
            }
            granted = grant();
        }
        if (removed) {
            w.context.runOnContext(v -> w.promise.fail(busy()));
        }
        complete(granted);
    }

    private void give(long bytes) {
        List<Waiter> granted;
        synchronized (this) {
            used -= bytes;
            granted = grant();
        }
        complete(granted);
    }

    /** Lets in whoever is first in line while they fit (lock held). */
    private List<Waiter> grant() {
        List<Waiter> granted = new ArrayList<>();
        while (!waiting.isEmpty() && fits(waiting.peekFirst().need)) {
            Waiter w = waiting.pollFirst();
            heldByWaiters -= w.held;
            used += w.need;
            if (w.lease != null) {
                w.lease.held += w.need;
            }
            granted.add(w);
        }
        return granted;
    }

    private void complete(List<Waiter> granted) {
        for (Waiter w : granted) {
            vertx.cancelTimer(w.timer);
            Lease lease = w.lease != null ? w.lease : new Lease(w.need);
            w.context.runOnContext(v -> w.promise.complete(lease));
        }
    }

    private RegistryError busy() {
        return new RegistryError(503, "UNAVAILABLE", "the mirror holds as many upstream answers in memory as it may"
                + " (server.bodyMemory); try again shortly", "1", null);
    }
}
