package dev.registrymirror.proxy.blob;

import dev.registrymirror.proxy.upstream.UpstreamClient;
import java.time.Duration;

/**
 * Who sends a body the mirror streams ({@link UpstreamBody}): an upstream registry, or another replica
 * of the cluster (the owner of a blob). It names itself in logs and errors, says how long its body may
 * stay silent, and counts what it sent and what went wrong.
 */
public interface Sender {
    String name();

    Duration idleTimeout();

    void received(long bytes);

    /** A failed exchange, by its metrics label ({@code timeout}, {@code protocol}, …). */
    void countError(String reason);

    /** An upstream registry. */
    static Sender of(UpstreamClient upstream) {
        return new Sender() {
            @Override
            public String name() {
                return upstream.name();
            }

            @Override
            public Duration idleTimeout() {
                return upstream.upstream().idleTimeout();
            }

            @Override
            public void received(long bytes) {
                upstream.received(bytes);
            }

            @Override
            public void countError(String reason) {
                upstream.countError(reason);
            }
        };
    }
}
