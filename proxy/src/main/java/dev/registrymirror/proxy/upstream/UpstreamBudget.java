package dev.registrymirror.proxy.upstream;

import dev.registrymirror.proxy.route.RegistryError;
import io.github.bucket4j.Bucket;
import io.github.bucket4j.ConsumptionProbe;
import io.vertx.core.Context;
import io.vertx.core.Vertx;
import io.vertx.core.spi.context.storage.ContextLocal;

/**
 * A client's allowance of upstream fetches ({@code access.upstreamFetchesPerMinute}), so that one
 * runaway CI job cannot spend an upstream's quota (Docker Hub counts manifest GETs) for the whole
 * LAN. The request handler puts the client's bucket in the request's (duplicated) Vert.x context;
 * each upstream GET made while answering that request takes one from it. Answers from the cache,
 * HEAD revalidations and joining a download under way take none.
 */
public final class UpstreamBudget {
    /**
     * The request's allowance, local to its (duplicated) context. Vert.x sizes each instance's
     * context locals when the instance is made: {@link #checkRegistered} tells when one was made
     * before this class was loaded.
     */
    static final ContextLocal<UpstreamBudget> KEY = ContextLocal.registerLocal(UpstreamBudget.class);
    private final Bucket bucket;
    private final String client;
    private final int perMinute;

    private final Runnable refused;

    private UpstreamBudget(Bucket bucket, String client, int perMinute, Runnable refused) {
        this.refused = refused;
        this.bucket = bucket;
        this.client = client;
        this.perMinute = perMinute;
    }

    /**
     * Fails unless {@code vertx}'s contexts can hold the allowance: the instance must be made after
     * this class was loaded ({@code Mirror.newVertx} sees to it, calling this with null first).
     */
    public static void checkRegistered(Vertx vertx) {
        if (vertx == null) {
            return; // only makes sure this class is loaded, and its local registered
        }
        try {
            vertx.getOrCreateContext().getLocal(KEY);
        } catch (RuntimeException e) {
            throw new IllegalStateException("this Vert.x instance was made before the mirror registered its context"
                    + " locals; make it with Mirror.newVertx", e);
        }
    }

    /** Makes {@code bucket} the allowance of the request being handled on the current context. */
    public static void attach(Bucket bucket, String client, int perMinute, Runnable refused) {
        Context c = Vertx.currentContext();
        if (c != null) {
            c.putLocal(KEY, new UpstreamBudget(bucket, client, perMinute, refused));
        }
    }

    /** Takes one fetch from the current request's allowance: the 429 to fail with when it is spent, else null. */
    static RegistryError spend(String upstream) {
        Context c = Vertx.currentContext();
        UpstreamBudget b = c == null ? null : c.getLocal(KEY);
        if (b == null) {
            return null;
        }
        ConsumptionProbe probe = b.bucket.tryConsumeAndReturnRemaining(1);
        if (probe.isConsumed()) {
            return null;
        }
        long seconds = Math.max(1, (probe.getNanosToWaitForRefill() + 999_999_999L) / 1_000_000_000L);
        b.refused.run();
        return new RegistryError(429, "TOOMANYREQUESTS", b.client + " is over " + b.perMinute
                + " upstream fetches per minute (access.upstreamFetchesPerMinute); what is cached is still served",
                Long.toString(seconds), null);
    }
}
