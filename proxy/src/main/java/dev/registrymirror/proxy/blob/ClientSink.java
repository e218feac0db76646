package dev.registrymirror.proxy.blob;

import dev.registrymirror.proxy.vertx.NettyBuffers;
import dev.registrymirror.metrics.MirrorMetrics;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpServerResponse;
import java.util.function.Consumer;

/**
 * A client's response as a {@link Pump.Sink}. Each piece goes to the socket as it is and is released
 * once written. A failure breaks the connection once anything has gone out; before that, the request
 * can still be answered with an error (or from the upstream), which the caller does. The client
 * going away is noticed from the start, while the download it waits for may still be connecting.
 */
final class ClientSink implements Pump.Sink {
    /** The client closed its connection. */
    static final class Gone extends RuntimeException {
        private static final long serialVersionUID = 1L;

        Gone() {
            super("the client closed its connection", null, false, false);
        }
    }

    /** Bytes given to the socket and not yet written out, beyond which the source waits. */
    static final int QUEUED_BYTES = 512 * 1024;

    private final HttpServerResponse resp;
    private long queued;
    private Runnable waiting;
    private final MirrorMetrics metrics;
    private boolean closed;
    private final Promise<Void> gone = Promise.promise();
    private Consumer<Throwable> onFailure;

    ClientSink(HttpServerResponse resp, MirrorMetrics metrics) {
        this.resp = resp;
        this.metrics = metrics;
        resp.closeHandler(v -> gone(new Gone()));
        resp.exceptionHandler(this::gone);
    }

    /** Whether the client has gone away. */
    boolean closed() {
        return closed;
    }

    /** Completes when the client goes away. */
    Future<Void> gone() {
        return gone.future();
    }

    private void gone(Throwable why) {
        if (closed) {
            return;
        }
        closed = true;
        gone.tryComplete();
        Consumer<Throwable> h = onFailure;
        if (h != null) {
            h.accept(why);
        }
    }

    @Override
    public void write(Pump.Piece piece) {
        int len = piece.length();
        metrics.bytesFromUpstream(len);
        queued += len;
        // Vert.x does not release a buffer it is given: the piece goes back once written.
        resp.write(NettyBuffers.wrap(piece.bytes())).onComplete(w -> {
            piece.release().run();
            queued -= len;
            if (waiting != null && queued <= QUEUED_BYTES) {
                Runnable r = waiting;
                waiting = null;
                r.run();
            }
        });
    }

    /**
     * Whether the source should wait: Vert.x's write queue is full, or more than {@link #QUEUED_BYTES}
     * wait to go out. Vert.x 5 counts its queue in messages, not bytes (measured: a slow reader held
     * 16 pieces of 256 KiB, 4 MiB, each), so the bytes are counted here too.
     */
    @Override
    public boolean full() {
        return queued > QUEUED_BYTES || resp.writeQueueFull();
    }

    @Override
    public void whenDrained(Runnable action) {
        if (queued > QUEUED_BYTES) {
            waiting = action; // the write that brings the queue down runs it
            return;
        }
        resp.drainHandler(v -> {
            resp.drainHandler(null); // Vert.x keeps calling it on every drain otherwise
            action.run();
        });
    }

    @Override
    public Future<Void> end() {
        return resp.end();
    }

    @Override
    public void fail(Throwable cause) {
        if (resp.headWritten() && !closed) {
            resp.reset();
        }
    }

    @Override
    public void onFailure(Consumer<Throwable> failed) {
        this.onFailure = failed;
        if (closed) {
            failed.accept(new Gone());
        }
    }
}
