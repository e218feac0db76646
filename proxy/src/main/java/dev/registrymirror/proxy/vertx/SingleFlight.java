package dev.registrymirror.proxy.vertx;

import io.vertx.core.Future;
import io.vertx.core.Promise;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentMap;
import java.util.function.Supplier;

/**
 * Runs one piece of asynchronous work per key at a time; callers arriving meanwhile share its
 * result. Each caller's future completes on the caller's own context. Work that throws instead of
 * returning a future fails like work whose future failed.
 */
public final class SingleFlight<K, V> {
    private final ConcurrentMap<K, Future<V>> running = new ConcurrentHashMap<>();

    public Future<V> run(K key, Supplier<Future<V>> work) {
        Promise<V> mine = Promise.promise();
        Future<V> existing = running.putIfAbsent(key, mine.future());
        Future<V> shared;
        if (existing == null) {
            shared = mine.future();
            // A throwing supplier must not leave the key taken by a future that never completes.
            Futures.attempt(work).onComplete(ar -> {
                running.remove(key, shared);
                mine.handle(ar);
            });
        } else {
            shared = existing;
        }
        return Futures.onCallerContext(shared);
    }
}
