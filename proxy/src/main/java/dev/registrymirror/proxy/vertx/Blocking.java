package dev.registrymirror.proxy.vertx;

import io.vertx.core.Future;
import io.vertx.core.Vertx;
import io.vertx.core.WorkerExecutor;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;

/**
 * Where the mirror's blocking work runs, off the event loops: lookups, file creation, commits and
 * the like on Vert.x's worker pool; the hashing of stored blobs on a pool of its own, so that a few
 * first reads of large layers after a restart (each a full read of the file) cannot hold every worker
 * while lookups wait behind them. Each future completes on the caller's context. An {@link Error}
 * thrown by the work is {@link Fatal fatal}.
 */
public final class Blocking {
    private final Vertx vertx;
    private final WorkerExecutor hashing;

    /** @param hashingThreads threads that hash stored blobs */
    public Blocking(Vertx vertx, int hashingThreads) {
        this.vertx = vertx;
        this.hashing = vertx.createSharedWorkerExecutor("registry-mirror-hashing-" + System.identityHashCode(this),
                hashingThreads, 10, TimeUnit.MINUTES);
    }

    /** Runs {@code work} on the worker pool; concurrent calls run in any order. */
    public <T> Future<T> run(Callable<T> work) {
        return vertx.executeBlocking(guarded(work), false);
    }

    /** Runs {@code work}, the hashing of stored bytes, on the hashing pool. */
    public <T> Future<T> hash(Callable<T> work) {
        return hashing.executeBlocking(guarded(work), false);
    }

    /** Releases the hashing pool. */
    public void close() {
        hashing.close();
    }

    private static <T> Callable<T> guarded(Callable<T> work) {
        return () -> {
            try {
                return work.call();
            } catch (Error e) {
                Fatal.check("blocking work", e);
                throw e;
            }
        };
    }
}
