package dev.registrymirror.proxy.blob;

import dev.registrymirror.proxy.upstream.Sender;

import dev.registrymirror.proxy.vertx.NettyBuffers;
import dev.registrymirror.cache.Digest;
import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.upstream.UpstreamClient;
import dev.registrymirror.proxy.vertx.Owner;
import io.vertx.core.Vertx;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpClientResponse;
import java.security.MessageDigest;
import java.util.function.Consumer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The body of an upstream's blob answer as a {@link Pump.Source}. It checks the size as bytes arrive
 * (never more than the announced {@code Content-Length}, nor than the {@link Limit}), and, given the
 * blob's digest, hashes every byte: its end is delivered only once size and digest match, a failure
 * otherwise; its last chunk is held back until then too, so a client it is streamed to never sees the
 * clean end of wrong content. Without a digest it
 * only checks the length: a range, which no digest covers, or a download's body, which its file
 * hashes as it arrives ({@link ChunkStage}) while its readers hold back the blob's last byte
 * until then ({@link DownloadReader}).
 *
 * <p>An upstream silent for its {@code idleTimeout} while the sink is waiting for it fails the
 * transfer; time spent paused by the sink does not count. Every failure is logged and counted once,
 * here. Runs on its owner's event loop.
 */
final class UpstreamBody implements Pump.Source {
    private static final Logger LOG = LoggerFactory.getLogger(UpstreamBody.class);

    /** The most bytes a body may have, and what it is when it has more. */
    interface Limit {
        long max();

        /** The failure for a body that went over {@link #max()} after {@code received} bytes. */
        Throwable exceeded(long received);

        /** At most {@code max} bytes; more is the failure {@code exceeded} makes of the count. */
        static Limit fixed(long max, java.util.function.LongFunction<Throwable> exceeded) {
            return new Limit() {
                @Override
                public long max() {
                    return max;
                }

                @Override
                public Throwable exceeded(long received) {
                    return exceeded.apply(received);
                }
            };
        }
    }

    private final Owner owner;
    private final Vertx vertx;
    private final HttpClientResponse resp;
    private final Sender upstream;
    private final Digest digest;
    private final String what;
    private final long announced;
    private final Limit limit;
    private final MemoryBudget budget;
    private final MessageDigest hasher;
    private Consumer<Pump.Piece> data;
    private Runnable end;
    private Consumer<Throwable> failed;
    private Pump.Piece held;
    private long received;
    private boolean paused = true;
    private boolean over;
    private long lastChunkNanos;
    private long watchdog = -1;

    /**
     * @param digest    the blob's digest, to verify it (and hold the last chunk back until then); null
     *                  for a range or a download's body (length checked only)
     * @param what      what is fetched, for the log ("blob sha256:…", "range 0-99 of …")
     * @param announced the {@code Content-Length}, -1 when none was sent
     */
    UpstreamBody(Owner owner, Vertx vertx, HttpClientResponse resp, UpstreamClient upstream, Digest digest, String what,
                 long announced, Limit limit, MemoryBudget budget) {
        this(owner, vertx, resp, Sender.of(upstream), digest, what, announced, limit, budget);
    }

    /** Like the other constructor, for a body another replica sends. */
    UpstreamBody(Owner owner, Vertx vertx, HttpClientResponse resp, Sender upstream, Digest digest, String what,
                 long announced, Limit limit, MemoryBudget budget) {
        this.owner = owner;
        this.vertx = vertx;
        this.resp = resp;
        this.upstream = upstream;
        this.digest = digest;
        this.what = what;
        this.announced = announced;
        this.limit = limit;
        this.budget = budget;
        this.hasher = digest != null ? digest.newHasher() : null;
    }

    /** Bytes received so far. */
    long received() {
        return received;
    }

    @Override
    public void start(Consumer<Pump.Piece> data, Runnable end, Consumer<Throwable> failed) {
        owner.check();
        this.data = data;
        this.end = end;
        this.failed = failed;
        lastChunkNanos = System.nanoTime();
        long idle = idleNanos();
        resp.exceptionHandler(err -> {
            // The connection's idle timeout closed it while this body was waited for.
            if (!paused && System.nanoTime() - lastChunkNanos >= idle * 9 / 10) {
                idle();
                return;
            }
            RegistryError e = UpstreamClient.transportError(upstream.name(), "upstream", err);
            abort(e.getMessage(), e.upstreamReason, e);
        });
        resp.handler(this::chunk);
        resp.endHandler(v -> finish());
        watchdog = vertx.setPeriodic(Math.max(10, idle / 4_000_000), t -> {
            if (!paused && !over && System.nanoTime() - lastChunkNanos > idle) {
                idle();
            }
        });
    }

    @Override
    public void pause() {
        owner.check();
        if (!paused && !over) {
            paused = true;
            resp.pause();
        }
    }

    @Override
    public void resume() {
        owner.check();
        if (paused && !over) {
            paused = false;
            lastChunkNanos = System.nanoTime();
            resp.resume();
        }
    }

    @Override
    public void cancel() {
        owner.check();
        if (over) {
            return;
        }
        over = true;
        stopReading();
        releaseHeld();
    }

    private long idleNanos() {
        return upstream.idleTimeout().toNanos();
    }

    private void idle() {
        abort("upstream sent nothing for " + upstream.idleTimeout().toMillis() + " ms", "timeout",
                RegistryError.unavailable(upstream.name(), "no data in time", "timeout"));
    }

    private void chunk(Buffer buf) {
        owner.check();
        if (over) {
            return;
        }
        lastChunkNanos = System.nanoTime();
        int len = buf.length();
        if (announced >= 0 && received + len > announced) {
            abort("upstream sent more than its Content-Length of " + announced, "protocol");
            return;
        }
        if (received + len > limit.max()) {
            fail("over its limit after " + received + " bytes", limit.exceeded(received + len));
            return;
        }
        received += len;
        upstream.received(len);
        if (hasher != null) {
            UpstreamClient.hash(hasher, buf);
        }
        budget.charge(len);
        Pump.Piece piece = new Pump.Piece(NettyBuffers.unwrap(buf), () -> budget.refund(len));
        if (hasher == null) {
            data.accept(piece);
            return;
        }
        // One chunk behind: the last one waits for the digest.
        Pump.Piece previous = held;
        held = piece;
        if (previous != null) {
            data.accept(previous);
        }
    }

    private void finish() {
        owner.check();
        if (over) {
            return;
        }
        if (announced >= 0 && received != announced) {
            abort("upstream body ended after " + received + " of " + announced + " bytes", "reset");
            return;
        }
        if (hasher != null && !digest.matches(hasher.digest())) {
            abort("digest mismatch: upstream bytes do not hash to " + digest, "digest_mismatch");
            return;
        }
        over = true;
        vertx.cancelTimer(watchdog);
        Pump.Piece last = held;
        held = null;
        if (last != null) {
            data.accept(last);
        }
        end.run();
    }

    /** An upstream fault; {@code reason} is the upstream-error label. */
    private void abort(String why, String reason) {
        abort(why, reason, RegistryError.badGateway(upstream.name(), why, reason));
    }

    private void abort(String why, String reason, Throwable error) {
        if (over) {
            return;
        }
        if (reason != null) {
            upstream.countError(reason);
        }
        fail(why, error);
    }

    private void fail(String why, Throwable error) {
        if (over) {
            return;
        }
        over = true;
        LOG.warn("upstream {}: {} failed after {} bytes: {}", upstream.name(), what, received, why);
        stopReading();
        releaseHeld();
        failed.accept(error);
    }

    /** Stops reading and closes the connection; later events find {@link #over} set and are ignored. */
    private void stopReading() {
        vertx.cancelTimer(watchdog);
        resp.handler(null);
        resp.endHandler(null);
        resp.request().reset();
    }

    private void releaseHeld() {
        if (held != null) {
            held.release().run();
            held = null;
        }
    }
}
