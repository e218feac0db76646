package dev.registrymirror.proxy.upstream;

import dev.registrymirror.proxy.route.RegistryError;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpClientResponse;
import io.vertx.core.http.HttpHeaders;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Function;

/**
 * Reads upstream bodies that are kept in memory (manifests, tag lists, referrers, token answers)
 * with their size checked before and while they arrive: a body announced larger than its limit is
 * refused before a byte is read, and one that grows past it is cut off there, its connection
 * closed. All of them together stay within the {@link BodyMemory} ({@link #withRoom}). Vert.x's
 * {@code body()} would buffer any amount first.
 */
public final class Bodies {
    /** Error bodies and other answers the mirror drops are drained up to this much, then cut off. */
    static final int DISCARD_LIMIT = 64 * 1024;

    private Bodies() {
    }

    /**
     * Runs an exchange whose answer is read whole ({@code work}: send, then {@link #read}) with room
     * in the mirror's {@link BodyMemory}: {@link BodyMemory#PAUSED_BYTES} taken before the request is
     * sent (waiting for it, or failing with a 503), given back when {@code work}'s future completes.
     */
    public static <T> Future<T> withRoom(UpstreamClient upstream, Function<BodyMemory.Lease, Future<T>> work) {
        return withRoom(upstream.bodyMemory(), work);
    }

    /** {@link #withRoom(UpstreamClient, Function)} in {@code memory}. */
    static <T> Future<T> withRoom(BodyMemory memory, Function<BodyMemory.Lease, Future<T>> work) {
        return memory.reserve(BodyMemory.PAUSED_BYTES)
                .compose(lease -> work.apply(lease).andThen(done -> lease.release()));
    }

    /**
     * The whole body of {@code resp} (paused, as {@link UpstreamClient} hands it over), at most
     * {@code max} bytes, handed to {@code use}; otherwise a 502 naming {@code what}. Counts the bytes
     * received. Before the first byte is read, {@code lease} (from {@link #withRoom}) grows to twice
     * the announced length, or twice {@code max} without one (waiting for it, or failing with a 503);
     * once the body has arrived it keeps twice its size. Do the work on the bytes inside {@code use}:
     * the room is given back after it. No buffer is sized from the announced length: the pieces are
     * kept as they come and put together once all have arrived.
     */
    public static <T> Future<T> read(Sender upstream, HttpClientResponse resp, int max, String what,
                                     BodyMemory.Lease lease, Function<byte[], Future<T>> use) {
        long announced = length(resp);
        if (announced > max) {
            close(resp);
            return Future.failedFuture(tooLarge(upstream, what, announced + " bytes", max));
        }
        long room = 2 * (announced >= 0 ? announced : max); // the pieces, then the array they are put into
        return lease.growTo(room).transform(grown -> {
            if (grown.failed()) {
                close(resp);
                return Future.failedFuture(grown.cause());
            }
            return collect(upstream, resp, max, what).compose(bytes -> {
                lease.shrink(Math.max(2L * bytes.length, BodyMemory.PAUSED_BYTES));
                return use.apply(bytes);
            });
        });
    }

    private static Future<byte[]> collect(Sender upstream, HttpClientResponse resp, int max, String what) {
        Promise<byte[]> result = Promise.promise();
        List<Buffer> chunks = new ArrayList<>();
        int[] total = {0};
        resp.handler(chunk -> {
            upstream.received(chunk.length());
            if ((long) total[0] + chunk.length() > max) {
                close(resp);
                chunks.clear();
                result.tryFail(tooLarge(upstream, what, "more than " + max + " bytes", max));
                return;
            }
            total[0] += chunk.length();
            chunks.add(chunk);
        });
        resp.exceptionHandler(err -> {
            chunks.clear();
            result.tryFail(upstream.transportFailure(err));
        });
        resp.endHandler(v -> {
            byte[] bytes = new byte[total[0]];
            int at = 0;
            for (Buffer c : chunks) {
                c.getBytes(bytes, at);
                at += c.length();
            }
            chunks.clear();
            result.tryComplete(bytes);
        });
        resp.resume();
        return result.future();
    }

    /**
     * Drops the body of an answer the mirror does not use: a small one is read to its end so that the
     * connection can be used again, a large or endless one is cut off (the connection is closed).
     */
    public static void discard(HttpClientResponse resp) {
        if (length(resp) > DISCARD_LIMIT) {
            close(resp);
            return;
        }
        long[] seen = {0};
        resp.handler(chunk -> {
            seen[0] += chunk.length();
            if (seen[0] > DISCARD_LIMIT) {
                close(resp);
            }
        });
        resp.exceptionHandler(err -> { });
        resp.endHandler(null);
        resp.resume();
    }

    /**
     * The body of a small answer (an error's), up to {@value #DISCARD_LIMIT} bytes; a longer one is cut
     * off (its connection closed) and yields an empty buffer, as does a broken one.
     */
    public static Future<Buffer> small(HttpClientResponse resp) {
        if (length(resp) > DISCARD_LIMIT) {
            close(resp);
            return Future.succeededFuture(Buffer.buffer());
        }
        Promise<Buffer> result = Promise.promise();
        Buffer body = Buffer.buffer();
        resp.handler(chunk -> {
            if (body.length() + chunk.length() > DISCARD_LIMIT) {
                close(resp);
                result.tryComplete(Buffer.buffer());
            } else {
                body.appendBuffer(chunk);
            }
        });
        resp.exceptionHandler(err -> result.tryComplete(Buffer.buffer()));
        resp.endHandler(v -> result.tryComplete(body));
        resp.resume();
        return result.future();
    }

    /** Stops reading {@code resp} and closes its connection. */
    public static void close(HttpClientResponse resp) {
        resp.handler(null);
        resp.endHandler(null);
        resp.exceptionHandler(err -> { });
        resp.request().reset();
    }

    /** The announced {@code Content-Length} of an upstream answer, or -1 when there is none (or it is not a number). */
    public static long length(HttpClientResponse resp) {
        String header = resp.getHeader(HttpHeaders.CONTENT_LENGTH);
        if (header == null) {
            return -1;
        }
        try {
            long n = Long.parseLong(header.trim());
            return n >= 0 ? n : -1;
        } catch (NumberFormatException e) {
            return -1;
        }
    }

    private static RegistryError tooLarge(Sender upstream, String what, String size, int max) {
        upstream.countError("protocol");
        return RegistryError.badGateway(upstream.name(), what + " of " + size + " is larger than the limit of "
                + max + " bytes", "protocol");
    }
}
