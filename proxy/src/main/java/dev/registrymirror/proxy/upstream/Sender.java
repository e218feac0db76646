package dev.registrymirror.proxy.upstream;

import java.time.Duration;

/**
 * Who sends a body the mirror reads or streams: an upstream registry, or another replica
 * of the cluster (the owner of a blob). It names itself in logs and errors, says how long its body may
 * stay silent, and counts what it sent and what went wrong.
 */
public interface Sender {
    String name();

    Duration idleTimeout();

    void received(long bytes);

    /** A failed exchange, by its metrics label ({@code timeout}, {@code protocol}, …). */
    void countError(String reason);

    /** The error a broken exchange with this sender ends in, counted. */
    default dev.registrymirror.proxy.route.RegistryError transportFailure(Throwable err) {
        dev.registrymirror.proxy.route.RegistryError e = UpstreamClient.transportError(name(), "upstream", err);
        if (!(err instanceof dev.registrymirror.proxy.route.RegistryError) && e.upstreamReason != null) {
            countError(e.upstreamReason);
        }
        return e;
    }

    /** An upstream registry: the client itself. */
    static Sender of(UpstreamClient upstream) {
        return upstream;
    }
}
