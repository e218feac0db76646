package dev.registrymirror.proxy.vertx;

import io.netty.buffer.Unpooled;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpServerResponse;

/**
 * Sends a body held in memory (a manifest) without copying it whole: in slices of the one array,
 * each written once the socket has taken the one before. {@code end(Buffer.buffer(bytes))} would copy
 * the array into a buffer, and the transport again into direct memory, for each client; a hundred
 * slow clients of a 4 MiB manifest would then hold 800 MiB.
 *
 * <p>Vert.x's public {@code Buffer.buffer(byte[])} copies: the slices wrap the array through
 * {@link NettyBuffers}.
 */
public final class Slices {
    /** Bodies up to this size are written at once. */
    static final int SLICE = 64 << 10;

    private Slices() {
    }

    /** Ends {@code resp} with {@code bytes}, which must not change meanwhile. */
    public static Future<Void> send(HttpServerResponse resp, byte[] bytes) {
        if (bytes.length <= SLICE) {
            return resp.end(Buffer.buffer(bytes));
        }
        Promise<Void> done = Promise.promise();
        resp.closeHandler(v -> done.tryFail(new IllegalStateException("the client closed the connection")));
        resp.exceptionHandler(done::tryFail);
        writeFrom(resp, bytes, 0, done);
        return done.future();
    }

    private static void writeFrom(HttpServerResponse resp, byte[] bytes, int from, Promise<Void> done) {
        int at = from;
        while (!done.future().isComplete()) {
            int n = Math.min(SLICE, bytes.length - at);
            Buffer slice = NettyBuffers.wrap(Unpooled.wrappedBuffer(bytes, at, n));
            at += n;
            if (at == bytes.length) {
                resp.end(slice).onComplete(done);
                return;
            }
            resp.write(slice);
            if (resp.writeQueueFull()) {
                int next = at;
                resp.drainHandler(v -> writeFrom(resp, bytes, next, done));
                return;
            }
        }
    }
}
