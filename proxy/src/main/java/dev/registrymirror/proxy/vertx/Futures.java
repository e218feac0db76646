package dev.registrymirror.proxy.vertx;

import io.vertx.core.Future;
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
}
