package dev.registrymirror.proxy.blob;

import io.netty.buffer.ByteBuf;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import java.util.function.Consumer;

/**
 * The one loop that moves a blob's bytes, whatever the ends: an upstream answer into a download's
 * file and window ({@link Fetch}), a download to a client ({@link DownloadReader}), an upstream answer
 * straight to a client when the cache cannot take it. It keeps the source paused while the sink is
 * full and resumes it when the sink drains; the end and failures run once, and a failure on either
 * side stops the other (the source is cancelled, the sink broken), releasing what was in flight.
 *
 * <p>What to check and what to hold back lives in the sources: {@link VerifiedBody} hashes an
 * upstream answer and holds its last chunk back until size and digest are checked;
 * {@link DownloadReader} holds a blob's last byte back until its download is verified. So a sink
 * never sees the clean end of wrong or short content.
 *
 * <p>Written by hand because Vert.x's {@code Pipe} hands plain {@code Buffer}s along: the chunks here
 * are pooled buffers counted against the {@link MemoryBudget}, each returned by whoever used it last
 * (a file write, a socket), which a {@link Piece} carries along.
 */
final class Pump {
    private Pump() {
    }

    /** Bytes handed from a source to a sink, and how to give them back once used. */
    record Piece(ByteBuf bytes, Runnable release) {
        int length() {
            return bytes.readableBytes();
        }
    }

    /** Where bytes come from, pushed while not paused. */
    interface Source {
        /**
         * Starts delivering: each piece to {@code data} (the receiver then owns it), then either
         * {@code end} once, or {@code failed} once. Nothing is delivered while paused.
         */
        void start(Consumer<Piece> data, Runnable end, Consumer<Throwable> failed);

        void pause();

        void resume();

        /** Stops for good, releasing what it holds; nothing more is delivered. */
        void cancel();
    }

    /** Where bytes go. */
    interface Sink {
        /** Takes a piece and its release. */
        void write(Piece piece);

        /** Whether the source should wait. */
        boolean full();

        /** Runs {@code action} once the sink is no longer full. */
        void whenDrained(Runnable action);

        /** Everything was delivered: completes once it is written out. */
        Future<Void> end();

        /** The transfer failed: the sink breaks (a client's connection is reset, a file is dropped). */
        void fail(Throwable cause);

        /** Tells the pump when the sink fails on its own (a client went away, a disk write failed). */
        void onFailure(Consumer<Throwable> failed);
    }

    /** Moves everything from {@code source} to {@code sink}; completes when the sink has it all. */
    static Future<Void> pipe(Source source, Sink sink) {
        Promise<Void> done = Promise.promise();
        sink.onFailure(err -> {
            if (done.tryFail(err)) {
                source.cancel();
            }
        });
        source.start(piece -> {
            if (done.future().isComplete()) {
                piece.release().run();
                return;
            }
            try {
                sink.write(piece);
                if (sink.full()) {
                    source.pause();
                    sink.whenDrained(() -> {
                        if (!done.future().isComplete()) {
                            source.resume();
                        }
                    });
                }
            } catch (RuntimeException e) {
                // A bug must not leave both sides waiting for each other forever.
                if (done.tryFail(e)) {
                    source.cancel();
                    sink.fail(e);
                }
                throw e;
            }
        }, () -> {
            if (!done.future().isComplete()) {
                sink.end().onComplete(ar -> {
                    if (ar.failed()) {
                        done.tryFail(ar.cause());
                    } else {
                        done.tryComplete();
                    }
                });
            }
        }, err -> {
            if (done.tryFail(err)) {
                sink.fail(err);
            }
        });
        source.resume();
        return done.future();
    }
}
