package dev.registrymirror.proxy.vertx;

import io.vertx.core.Context;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.Vertx;

/**
 * The event loop that owns a piece of state: every change to it runs there, so its fields need no
 * locks, as in Netty's channel pipeline. Captured when the thing is born ({@link #current()}); any
 * callback that may arrive on another thread is brought back with {@link #on} or {@link #run}; and
 * {@link #check()} says so in each method that changes state.
 *
 * <p>A violated check is a bug that would otherwise race on plain fields (a download's bytes, its
 * state): it throws an {@link AssertionError}, which the mirror treats as {@link Fatal}.
 */
public final class Owner {
    /**
     * The key under which an anchored context keeps itself in its data. A context's data is shared
     * with the contexts duplicated from it (one per request), its locals are not: so a request's
     * context finds its event loop's own context here, through public API.
     */
    private static final Object ANCHOR = new Object();

    private final Context context;
    private final Thread thread;

    private Owner(Context context, Thread thread) {
        this.context = context;
        this.thread = thread;
    }

    /**
     * Makes {@code context} (a verticle's own, not a request's) the context of what is owned on its
     * event loop: callbacks of a download a request started run there, not on that request's context,
     * whose locals (its client's allowance of upstream fetches) are the request's alone. Call it in
     * the verticle's {@code start}.
     */
    public static void anchor(Context context) {
        context.put(ANCHOR, context);
    }

    /**
     * The event loop of the calling thread, with its anchored context (the current context where none
     * was anchored, as in tests); fails when called elsewhere.
     */
    public static Owner current() {
        Context c = Vertx.currentContext();
        if (c == null || !c.isEventLoopContext() || !Context.isOnEventLoopThread()) {
            throw new AssertionError("an owner must be made on an event loop, not on " + Thread.currentThread().getName());
        }
        Context anchored = c.get(ANCHOR);
        return new Owner(anchored != null ? anchored : c, Thread.currentThread());
    }

    /** The owner's context. */
    public Context context() {
        return context;
    }

    /** Whether the calling thread is the owner's event loop. */
    public boolean here() {
        return Thread.currentThread() == thread;
    }

    /** Fails (fatally) unless called on the owner's event loop. */
    public void check() {
        if (!here()) {
            throw new AssertionError("owned by " + thread.getName() + ", called on "
                    + Thread.currentThread().getName());
        }
    }

    /** Runs {@code action} on the owner's event loop: now if already there, else as a task there. */
    public void run(Runnable action) {
        if (here()) {
            action.run();
        } else {
            context.runOnContext(v -> action.run());
        }
    }

    /** {@code future}, completing on the owner's event loop whichever thread completes it. */
    public <T> Future<T> on(Future<T> future) {
        Promise<T> p = Promise.promise();
        future.onComplete(ar -> run(() -> p.handle(ar)));
        return p.future();
    }
}
