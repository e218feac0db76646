package dev.registrymirror.proxy.upstream;

import dev.registrymirror.proxy.route.RegistryError;
import io.github.bucket4j.Bucket;
import io.github.bucket4j.ConsumptionProbe;
import io.vertx.core.Context;
import io.vertx.core.Vertx;

/**
 * A client's allowance of upstream fetches ({@code access.upstreamFetchesPerMinute}), so that one
 * runaway CI job cannot spend an upstream's quota (Docker Hub counts manifest GETs) for the whole
 * LAN. The request handler puts the client's bucket in the request's (duplicated) Vert.x context;
 * each upstream GET made while answering that request takes one from it. Answers from the cache,
 * HEAD revalidations and joining a download under way take none.
 */
public final class UpstreamBudget {
    static final String KEY = "registrymirror.upstream-budget";
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
