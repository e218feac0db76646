package dev.registrymirror.proxy.blob;

import dev.registrymirror.cache.Digest;
import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.vertx.Owner;
import io.netty.buffer.ByteBuf;
import io.vertx.core.Context;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * One blob on its way from an upstream into a temporary file, as its readers see it. Any number of
 * clients read it while it arrives, each at its own pace; the download belongs to none of them and
 * goes on if they leave.
 *
 * <p>The most recent chunks stay in memory (up to {@link #WINDOW_BYTES} already written, fewer when
 * all transfers together reach their {@link MemoryBudget}, plus whatever is not yet written to the
 * file), so readers that keep up with the upstream are served from there, without waiting for the disk
 * or reading it back; a reader that falls behind the window reads the file, where everything
 * before the window is already written.
 *
 * <p>Implementation note: every change is made by the download's {@link Fetch}, on its owner's event
 * loop, and says so ({@link Owner#check}). Readers live on other event loops: they read under this
 * object's monitor, and wait through {@link #await}, whose future completes on the reader's own
 * context. The state only moves forward (CONNECTING, STREAMING, VERIFIED, DONE), and nothing leaves
 * FAILED: a download cancelled while it connects stays failed when its upstream answers. A chunk is
 * counted against the budget from its allocation until its last user (the window, the file write,
 * every socket sending a slice of it) lets go. The temporary file is deleted once the download has
 * ended and no reader is between {@link #reserve} and {@link #release} (a reader that opened the
 * file keeps its handle).
 */
final class Download {
    /**
     * CONNECTING until the upstream answers; STREAMING while bytes arrive; VERIFIED once every byte
     * has arrived and matches the digest (readers may finish; the file may still be written: what is
     * not is still in the window); DONE once written and committed to the store (or found not
     * storable); FAILED when it cannot finish (from VERIFIED too: the disk failed before every byte
     * was written, and readers still reading break).
     */
    enum State { CONNECTING, STREAMING, VERIFIED, DONE, FAILED }

    /** What a reader sees at one instant. */
    record Snapshot(State state, long available, long onDisk, long size, Throwable failure) {
        boolean complete() {
            return state == State.VERIFIED || state == State.DONE;
        }
    }

    /** A reader waiting on its event loop ({@code thread}, the one its {@code context} runs on). */
    private record Waiter(Context context, Thread thread, Promise<Void> promise) {
    }

    /**
     * A chunk in memory, counted against the budget until its last user releases it: the window, the
     * file write, and each reader's slice each hold one reference.
     */
    static final class Chunk {
        final long position;
        final ByteBuf bytes;
        private final MemoryBudget budget;
        private final AtomicInteger refs;

        Chunk(long position, ByteBuf bytes, MemoryBudget budget, int refs) {
            this.position = position;
            this.bytes = bytes;
            this.budget = budget;
            this.refs = new AtomicInteger(refs);
            budget.charge(bytes.readableBytes());
        }

        long end() {
            return position + bytes.readableBytes();
        }

        void retain() {
            refs.incrementAndGet();
        }

        void release() {
            if (refs.decrementAndGet() == 0) {
                budget.refund(bytes.readableBytes());
                bytes.release();
            }
        }
    }

    /** Bytes already written to the file that the window keeps in memory for readers, at most. */
    static final int WINDOW_BYTES = 4 << 20;

    final Digest digest;
    private final Owner owner;
    private final MemoryBudget budget;
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
    private Runnable onCancel;
    private final List<Waiter> waiters = new ArrayList<>();

    /**
     * The name it was started for ({@code upstream/repository}): its bytes go to requests under other
     * names only as {@code Provenance} allows, and its failure is that name's alone. And since when:
     * for the status page.
     */
    final String source;
    final long startedNanos = System.nanoTime();

    Download(Digest digest, Owner owner, MemoryBudget budget, String source) {
        this.source = source;
        this.digest = digest;
        this.owner = owner;
        this.budget = budget;
    }

    synchronized Snapshot snapshot() {
        return new Snapshot(state, available, onDisk, size, failure);
    }

    /** Whether it failed: such a download is never joined, a new one takes its place. */
    synchronized boolean failedAlready() {
        return state == State.FAILED;
    }

    synchronized Path temp() {
        return temp;
    }

    /**
     * The upstream answered: bytes will appear in {@code file}; {@code size} is -1 when not announced.
     * False when the download failed meanwhile (cancelled while it connected): it stays failed.
     */
    boolean streaming(Path file, long announcedSize) {
        owner.check();
        boolean[] moved = {false};
        update(() -> {
            if (state == State.CONNECTING) {
                temp = file;
                size = announcedSize;
                state = State.STREAMING;
                moved[0] = true;
            }
        });
        return moved[0];
    }

    /**
     * The next chunk of the body (= what was available so far), hashed but maybe not written yet. The
     * window takes one of the chunk's references, or releases it when the chunk is out of place.
     */
    void arrived(Chunk chunk) {
        owner.check();
        update(() -> {
            if (state != State.STREAMING || chunk.position != available) {
                chunk.release();
                return;
            }
            window.addLast(chunk);
            available = chunk.end();
        });
    }

    /** The first {@code bytes} bytes of the file are written. */
    void written(long bytes) {
        owner.check();
        synchronized (this) {
            onDisk = bytes;
            long keptOnDisk = 0;
            for (Chunk c : window) {
                if (c.end() <= onDisk) {
                    keptOnDisk += c.bytes.readableBytes();
                }
            }
            // Chunks leave from the front once written: those beyond WINDOW_BYTES of written ones, and
            // every written one while all transfers together are over the budget.
            while (!window.isEmpty() && window.peekFirst().end() <= onDisk
                    && (keptOnDisk > WINDOW_BYTES || budget.over())) {
                Chunk c = window.pollFirst();
                keptOnDisk -= c.bytes.readableBytes();
                c.release();
            }
        }
    }

    /**
     * Up to {@code max} bytes from {@code position} as they are in memory, for one reader, who must run
     * the piece's release once its socket has written it; null when {@code position} is before the
     * window (read the file, where it is written) or not yet available.
     */
    synchronized Pump.Piece take(long position, int max) {
        if (window.isEmpty() || position < window.peekFirst().position || position >= available) {
            return null;
        }
        for (Chunk c : window) {
            if (position < c.end()) {
                int from = (int) (position - c.position);
                int len = (int) Math.min(max, c.end() - position);
                c.retain();
                return new Pump.Piece(c.bytes.slice(c.bytes.readerIndex() + from, len), c::release);
            }
        }
        return null;
    }

    /** Every byte has arrived and matches the digest; writing it and committing it may still be under way. */
    void verified(long finalSize) {
        owner.check();
        update(() -> {
            if (state == State.STREAMING) {
                available = finalSize;
                size = finalSize;
                state = State.VERIFIED;
            }
        });
    }

    /** Every byte is written, verified and committed; readers still behind read the file from now on. */
    void done(long finalSize) {
        owner.check();
        update(() -> {
            if (state == State.VERIFIED) {
                available = finalSize;
                onDisk = finalSize;
                size = finalSize;
                state = State.DONE;
                dropWindow();
            }
        });
        maybeFreeTemp();
    }

    /** The download cannot finish. Readers must break their connections (or answer the error, if not yet started). */
    void failed(Throwable cause) {
        owner.check();
        List<Waiter> wake;
        synchronized (this) {
            if (state == State.DONE || state == State.FAILED) {
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

    /** Applies a change under the lock, then wakes every reader waiting for one. */
    private void update(Runnable change) {
        List<Waiter> wake;
        synchronized (this) {
            change.run();
            wake = takeWaiters();
        }
        wake(wake);
    }

    /**
     * A future that completes, on {@code context}, once the download differs from what a reader saw:
     * more bytes, or a new state. Call it on {@code context}'s event loop.
     */
    Future<Void> await(Context context, Snapshot seen) {
        Promise<Void> p = Promise.promise();
        synchronized (this) {
            if (state == seen.state() && available == seen.available()) {
                waiters.add(new Waiter(context, Thread.currentThread(), p));
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
        owner.check();
        synchronized (this) {
            onTempFree = action;
        }
        maybeFreeTemp();
    }

    /** How to stop the transfer once it runs; before, a cancelled download simply fails. */
    void onCancel(Runnable action) {
        owner.check();
        onCancel = action;
    }

    /** Stops the download (from any thread): the transfer is aborted, or, before it began, the download fails. */
    void cancel() {
        owner.run(() -> {
            if (onCancel != null) {
                onCancel.run();
            } else {
                failed(RegistryError.shuttingDown());
            }
        });
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
            c.release();
        }
        window.clear();
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
            if (w.thread() == Thread.currentThread()) {
                w.promise().tryComplete();
            } else {
                w.context().runOnContext(v -> w.promise().tryComplete());
            }
        }
    }
}
