package dev.registrymirror.proxy.vertx;

import io.vertx.core.Context;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.impl.ContextInternal;

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
    private final ContextInternal context;

    private Owner(ContextInternal context) {
        this.context = context;
    }

    /** The event loop of the calling thread; fails when called elsewhere. */
    public static Owner current() {
        ContextInternal c = ContextInternal.current();
        if (c == null || !c.isEventLoopContext() || !c.nettyEventLoop().inEventLoop()) {
            throw new AssertionError("an owner must be made on an event loop, not on " + Thread.currentThread().getName());
        }
        return new Owner(c.unwrap());
    }

    /** The owner's context. */
    public Context context() {
        return context;
    }

    /** Whether the calling thread is the owner's event loop. */
    public boolean here() {
        return context.nettyEventLoop().inEventLoop();
    }

    /** Fails (fatally) unless called on the owner's event loop. */
    public void check() {
        if (!here()) {
            throw new AssertionError("owned by " + context.nettyEventLoop() + ", called on "
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
