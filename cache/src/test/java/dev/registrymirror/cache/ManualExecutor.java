package dev.registrymirror.cache;

import java.util.ArrayDeque;
import java.util.Queue;
import java.util.concurrent.Executor;

/** Runs what it is given only when the test says so: the scan and upkeep happen at known points. */
final class ManualExecutor implements Executor {
    private final Queue<Runnable> queued = new ArrayDeque<>();

    @Override
    public synchronized void execute(Runnable task) {
        queued.add(task);
    }

    /** Runs everything queued, including what that queues. */
    void runAll() {
        Runnable next;
        while ((next = poll()) != null) {
            next.run();
        }
    }

    private synchronized Runnable poll() {
        return queued.poll();
    }
}
