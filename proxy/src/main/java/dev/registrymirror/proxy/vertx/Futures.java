package dev.registrymirror.proxy.vertx;

import io.vertx.core.Context;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.Vertx;
import java.util.function.Supplier;

/** Small helpers for futures. */
public final class Futures {
    private Futures() {
    }

    /**
     * The future {@code work} returns, or a failed one when it throws instead: code that releases
     * or cleans up in a continuation then runs in both cases.
     */
    public static <T> Future<T> attempt(Supplier<Future<T>> work) {
        try {
            return work.get();
        } catch (RuntimeException e) {
            return Future.failedFuture(e);
        }
    }

    /**
     * {@code future}, completing on the calling thread's context whichever thread completes it (as
     * it is when the call was made off any context). A future shared between callers on different
     * event loops (one token fetch, one manifest fetch) otherwise runs every caller's continuation on
     * the thread that finished it: another loop's.
     */
    public static <T> Future<T> onCallerContext(Future<T> future) {
        Context caller = Vertx.currentContext();
        if (caller == null) {
            return future;
        }
        Promise<T> p = Promise.promise();
        future.onComplete(ar -> {
            if (Vertx.currentContext() == caller) {
                p.handle(ar);
            } else {
                caller.runOnContext(v -> p.handle(ar));
            }
        });
        return p.future();
    }
}
