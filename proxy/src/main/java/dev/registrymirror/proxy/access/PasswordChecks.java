package dev.registrymirror.proxy.access;

import dev.registrymirror.proxy.route.RegistryError;
import io.github.bucket4j.Bandwidth;
import io.github.bucket4j.Bucket;
import io.github.bucket4j.ConsumptionProbe;
import com.github.benmanes.caffeine.cache.Cache;
import com.github.benmanes.caffeine.cache.Caffeine;
import io.vertx.core.Context;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.Vertx;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.function.BiPredicate;

/**
 * The bcrypt checks of Basic credentials, rationed: each costs tens of milliseconds of CPU by design,
 * so a client sending wrong passwords in a loop would otherwise hold the threads that check everyone's.
 *
 * <ul>
 *   <li><b>Failed logins are throttled per address, before any hashing.</b> An address has
 *       {@code access.failedLoginsPerMinute} failures to spend (a token bucket): each check takes
 *       one before it runs, and a check that succeeds gives it back. An address with none left gets
 *       {@code 429} with {@code Retry-After} at once, without a check.</li>
 *   <li><b>Addresses take turns.</b> Checks run on {@value #THREADS} threads, which serve the
 *       addresses with checks waiting in turn, one check each, so a flood from one address delays
 *       another's login by about one check, not by the flood.</li>
 *   <li><b>The queue is bounded.</b> With {@value #MAX_QUEUED} checks waiting in all, more are
 *       refused at once with {@code 503} and {@code Retry-After}.</li>
 * </ul>
 *
 * <p>Written by hand: an executor's queue is first come first served, and would let one address's
 * flood stand in front of everyone else's logins.
 */
final class PasswordChecks {
    static final int THREADS = 2;
    static final int MAX_QUEUED = 256;

    /** What a refusal says, and whether it was the address's throttle (429) or the full queue (503). */
    static final class Refused extends RuntimeException {
        private static final long serialVersionUID = 1L;
        final RegistryError error;
        final boolean throttled;

        Refused(RegistryError error, boolean throttled) {
            super(error.getMessage(), null, false, false);
            this.error = error;
            this.throttled = throttled;
        }
    }

    private record Check(String user, String password, Context context, Promise<Boolean> result) {
    }

    private final Vertx vertx;
    private final BiPredicate<String, String> hasher;
    private final int failuresPerMinute;
    private final Cache<String, Bucket> failures = Caffeine.newBuilder().maximumSize(100_000)
            .expireAfterAccess(Duration.ofMinutes(10)).build();
    private final ExecutorService threads = Executors.newFixedThreadPool(THREADS, r -> {
        Thread t = new Thread(r, "password-check");
        t.setDaemon(true);
        return t;
    });
    private final Object lock = new Object();
    /** Each address's checks waiting, in order. */
    private final Map<String, ArrayDeque<Check>> lines = new HashMap<>();
    /** The addresses with checks waiting, each once, in the order they get their next turn. */
    private final ArrayDeque<String> turns = new ArrayDeque<>();
    private int queued;

    /**
     * @param hasher            the check itself, {@code (user, password) -> right}; blocks
     * @param failuresPerMinute failed logins an address may make a minute ({@code access.failedLoginsPerMinute})
     */
    PasswordChecks(Vertx vertx, BiPredicate<String, String> hasher, int failuresPerMinute) {
        this.vertx = vertx;
        this.hasher = hasher;
        this.failuresPerMinute = failuresPerMinute;
    }

    /**
     * Whether {@code password} is {@code user}'s, checked off the event loop when {@code address} may
     * still fail a login and the queue has room; the future completes on the caller's context, failed
     * with a {@link Refused} otherwise.
     */
    Future<Boolean> check(String address, String user, String password) {
        Bucket bucket = failures.get(address, a -> Bucket.builder().addLimit(Bandwidth.builder()
                .capacity(failuresPerMinute).refillGreedy(failuresPerMinute, Duration.ofMinutes(1)).build()).build());
        ConsumptionProbe probe = bucket.tryConsumeAndReturnRemaining(1);
        if (!probe.isConsumed()) {
            long seconds = Math.max(1, (probe.getNanosToWaitForRefill() + 999_999_999L) / 1_000_000_000L);
            return Future.failedFuture(new Refused(new RegistryError(429, "TOOMANYREQUESTS", "too many failed logins from "
                    + address + "; try again in " + seconds + " s", Long.toString(seconds), null), true));
        }
        Check c = new Check(user, password, vertx.getOrCreateContext(), Promise.promise());
        synchronized (lock) {
            if (queued >= MAX_QUEUED) {
                bucket.addTokens(1);
                return Future.failedFuture(new Refused(new RegistryError(503, "UNAVAILABLE",
                        "too many password checks waiting; try again shortly", "1", null), false));
            }
            queued++;
            ArrayDeque<Check> line = lines.computeIfAbsent(address, a -> new ArrayDeque<>());
            line.addLast(c);
            if (line.size() == 1) {
                turns.addLast(address);
            }
        }
        threads.execute(this::runNext);
        return c.result().future().andThen(ar -> {
            if (ar.succeeded() && ar.result()) {
                bucket.addTokens(1); // a success costs the address nothing
            }
        });
    }

    /** Runs the check of the address whose turn it is (one task per check queued, so none is left behind). */
    private void runNext() {
        Check c;
        synchronized (lock) {
            String address = turns.pollFirst();
            if (address == null) {
                return;
            }
            ArrayDeque<Check> line = lines.get(address);
            c = line.pollFirst();
            if (line.isEmpty()) {
                lines.remove(address);
            } else {
                turns.addLast(address);
            }
            queued--;
        }
        boolean right;
        try {
            right = hasher.test(c.user(), c.password());
        } catch (RuntimeException e) {
            right = false;
        }
        boolean verdict = right;
        c.context().runOnContext(v -> c.result().complete(verdict));
    }

    /** Checks waiting now. */
    int queued() {
        synchronized (lock) {
            return queued;
        }
    }

    void close() {
        threads.shutdownNow();
    }
}
