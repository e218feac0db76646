package dev.registrymirror.proxy.blob;

import dev.registrymirror.proxy.route.RegistryError;

import dev.registrymirror.cache.Digest;
import io.vertx.core.Context;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.impl.ContextInternal;
import io.netty.buffer.ByteBuf;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

/**
 * One blob on its way from an upstream into a temporary file. Any number of clients read it while
 * it arrives, each at its own pace; the download itself belongs to none of them and goes on if
 * they leave.
 *
 * <p>The most recent chunks stay in memory (up to {@link #WINDOW_BYTES} already written, fewer when
 * all downloads together reach their {@link Budget}, plus whatever is not yet written to the file),
 * so readers that keep up with the upstream are served from there, without waiting for the disk
 * or reading it back; a reader that falls behind the window reads the file, where everything
 * before the window is already written.
 *
 * <p>Implementation note: the state is guarded by this object's monitor, because readers live on
 * other event loops than the writer. Readers wait through {@link #await}, whose future completes on
 * the reader's own context. The window's chunks are pooled direct buffers; a reader takes a
 * retained slice under the monitor and releases it once its socket has written it, so a chunk
 * leaving the window is freed only when no socket still needs it. The temporary file is deleted
 * once the download has ended and no reader is between {@link #reserve} and {@link #release} (a
 * reader that opened the file keeps its handle).
 */
final class Download {
    /**
     * CONNECTING until the upstream answers; STREAMING while bytes arrive; VERIFIED once every byte
     * is written and matches the digest (readers may finish; it can no longer fail); DONE once
     * committed to the store (or found not storable); FAILED when it cannot finish.
     */
    enum State { CONNECTING, STREAMING, VERIFIED, DONE, FAILED }

    /** What a reader sees at one instant. */
    record Snapshot(State state, long available, long onDisk, long size, Throwable failure) {
    }

    private record Waiter(Context context, Promise<Void> promise) {
    }

    private record Chunk(long position, ByteBuf bytes) {
        long end() {
            return position + bytes.readableBytes();
        }
    }

    /** Bytes already written to the file that the window keeps in memory for readers, at most. */
    static final int WINDOW_BYTES = 4 << 20;

    /**
     * The memory all windows together may take: beyond it, written chunks leave at once (readers
     * then read the file), and downloads with chunks not yet written stop reading their upstreams
     * until those are written ({@link InflightDownloads}), so many downloads at once, or a disk slower
     * than the upstreams, cannot exhaust direct memory.
     */
    static final class Budget {
        final long limit;
        private final AtomicLong used = new AtomicLong();

        Budget(long limit) {
            this.limit = limit;
        }

        long used() {
            return used.get();
        }

        /** Whether all downloads together hold more than the limit. */
        boolean over() {
            return used.get() > limit;
        }
    }

    final Digest digest;
    private final Budget budget;
    private State state = State.CONNECTING;
    private Path temp;
    private long size = -1;
    private long available;
    /** How much of the file is written, from its start. */
    private long onDisk;
    /** The most recent chunks, in order, contiguous, ending at {@code available} (while streaming). */
    private final ArrayDeque<Chunk> window = new ArrayDeque<>();
    private Throwable failure;
    private int reserved;
    private boolean tempGone;
    private Runnable onTempFree;
    private Context cancelContext;
    private Runnable onCancel;
    private final List<Waiter> waiters = new ArrayList<>();

    Download(Digest digest, Budget budget) {
        this.digest = digest;
        this.budget = budget;
    }

    synchronized Snapshot snapshot() {
        return new Snapshot(state, available, onDisk, size, failure);
    }

    synchronized Path temp() {
        return temp;
    }

    /** The upstream answered: bytes will appear in {@code file}; {@code size} is -1 when not announced. */
    void streaming(Path file, long announcedSize) {
        update(() -> {
            temp = file;
            size = announcedSize;
            state = State.STREAMING;
        });
    }

    /**
     * The next chunk of the body, at {@code position} (= what was available so far), hashed but maybe
     * not written yet. The window takes over the caller's reference to {@code bytes}.
     */
    void arrived(long position, ByteBuf bytes) {
        update(() -> {
            if (state != State.STREAMING || position != available) {
                bytes.release();
                return;
            }
            window.addLast(new Chunk(position, bytes));
            budget.used.addAndGet(bytes.readableBytes());
            available = position + bytes.readableBytes();
        });
    }

    /** The first {@code bytes} bytes of the file are written. */
    void written(long bytes) {
        synchronized (this) {
            onDisk = bytes;
            long keptOnDisk = 0;
            for (Chunk c : window) {
                if (c.end() <= onDisk) {
                    keptOnDisk += c.bytes().readableBytes();
                }
            }
            // Chunks leave from the front once written: those beyond WINDOW_BYTES of written ones, and
            // every written one while all windows together are over the budget.
            while (!window.isEmpty() && window.peekFirst().end() <= onDisk
                    && (keptOnDisk > WINDOW_BYTES || budget.over())) {
                Chunk c = window.pollFirst();
                keptOnDisk -= c.bytes().readableBytes();
                drop(c);
            }
        }
    }

    /**
     * Up to {@code max} bytes from {@code position} as they are in memory, for one reader, who must
     * release the buffer once written; null when {@code position} is before the window (read the
     * file, where it is written) or not yet available.
     */
    synchronized ByteBuf take(long position, int max) {
        if (window.isEmpty() || position < window.peekFirst().position() || position >= available) {
            return null;
        }
        for (Chunk c : window) {
            if (position < c.end()) {
                int from = (int) (position - c.position());
                int len = (int) Math.min(max, c.end() - position);
                return c.bytes().retainedSlice(c.bytes().readerIndex() + from, len);
            }
        }
        return null;
    }

    /** Every byte is written and verified; committing is under way. */
    void verified(long finalSize) {
        update(() -> {
            available = finalSize;
            size = finalSize;
            state = State.VERIFIED;
        });
    }

    /** Every byte is written, verified and committed; readers still behind read the file from now on. */
    void done(long finalSize) {
        update(() -> {
            available = finalSize;
            onDisk = finalSize;
            size = finalSize;
            state = State.DONE;
            dropWindow();
        });
        maybeFreeTemp();
    }

    /** Applies a change under the lock, then wakes every reader waiting for one. */
    private void update(Runnable change) {
        List<Waiter> wake;
        synchronized (this) {
            change.run();
            wake = takeWaiters();
        }
        wake(wake);
    }

    /** The download cannot finish. Readers must break their connections (or answer the error, if not yet started). */
    void failed(Throwable cause) {
        List<Waiter> wake;
        synchronized (this) {
            if (state == State.VERIFIED || state == State.DONE || state == State.FAILED) {
                return;
            }
            failure = cause;
            state = State.FAILED;
            dropWindow();
            wake = takeWaiters();
        }
        wake(wake);
        maybeFreeTemp();
    }

    /**
     * A future that completes, on the caller's context, once the download differs from what a
     * reader saw: more bytes, or a new state.
     */
    Future<Void> await(Context context, Snapshot seen) {
        Promise<Void> p = Promise.promise();
        synchronized (this) {
            if (state == seen.state() && available == seen.available()) {
                waiters.add(new Waiter(context, p));
                return p.future();
            }
        }
        p.complete();
        return p.future();
    }

    /**
     * Keeps the temporary file until {@link #release}. False when it is already gone (the blob was
     * committed or dropped meanwhile): look again in the store.
     */
    synchronized boolean reserve() {
        if (tempGone) {
            return false;
        }
        reserved++;
        return true;
    }

    void release() {
        synchronized (this) {
            reserved--;
        }
        maybeFreeTemp();
    }

    /** What to run once the temporary file is no longer needed; runs at most once. */
    void onTempFree(Runnable action) {
        synchronized (this) {
            onTempFree = action;
        }
        maybeFreeTemp();
    }

    /** How to stop the transfer (run on {@code context}) when the download is {@link #cancel cancelled}. */
    synchronized void onCancel(Context context, Runnable action) {
        cancelContext = context;
        onCancel = action;
    }

    /** Stops the download: the transfer is aborted, or, before it began, the download simply fails. */
    void cancel() {
        Context context;
        Runnable action;
        synchronized (this) {
            context = cancelContext;
            action = onCancel;
        }
        if (action != null) {
            context.runOnContext(v -> action.run());
        } else {
            failed(new RegistryError(503, "UNAVAILABLE", "the mirror is shutting down"));
        }
    }

    private void maybeFreeTemp() {
        Runnable action;
        synchronized (this) {
            boolean ended = state == State.DONE || state == State.FAILED;
            if (!ended || reserved > 0 || tempGone || onTempFree == null) {
                return;
            }
            tempGone = true;
            action = onTempFree;
        }
        action.run();
    }

    private void dropWindow() {
        for (Chunk c : window) {
            drop(c);
        }
        window.clear();
    }

    private void drop(Chunk c) {
        budget.used.addAndGet(-c.bytes().readableBytes());
        c.bytes().release();
    }

    private List<Waiter> takeWaiters() {
        if (waiters.isEmpty()) {
            return List.of();
        }
        List<Waiter> out = new ArrayList<>(waiters);
        waiters.clear();
        return out;
    }

    /**
     * Wakes readers: at once for those on the calling thread's event loop (a task would wait behind
     * the loop's pending reads, each a chunk to hash: measured 2-3 ms before the first byte went
     * out), through their context for the others.
     */
    private static void wake(List<Waiter> list) {
        for (Waiter w : list) {
            if (((ContextInternal) w.context()).nettyEventLoop().inEventLoop()) {
                w.promise().tryComplete();
            } else {
                w.context().runOnContext(v -> w.promise().tryComplete());
            }
        }
    }
}
