package dev.registrymirror.proxy;

import dev.registrymirror.cache.Digest;
import io.vertx.core.Context;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * One blob on its way from an upstream into a temporary file. Any number of clients read the file
 * while it grows, each at its own pace; the download itself belongs to none of them and goes on if
 * they leave.
 *
 * <p>Implementation note: the state is guarded by this object's monitor, because readers live on
 * other event loops than the writer. Readers wait through {@link #await}, whose future completes on
 * the reader's own context. The temporary file is deleted once the download has ended and no reader
 * is between {@link #reserve} and {@link #release} (a reader that opened the file keeps its handle).
 */
final class Download {
    /**
     * CONNECTING until the upstream answers; STREAMING while bytes arrive; VERIFIED once every byte
     * is written and matches the digest (readers may finish; it can no longer fail); DONE once
     * committed to the store (or found not storable); FAILED when it cannot finish.
     */
    enum State { CONNECTING, STREAMING, VERIFIED, DONE, FAILED }

    /** What a reader sees at one instant. */
    record Snapshot(State state, long available, long size, Throwable failure) {
    }

    private record Waiter(Context context, Promise<Void> promise) {
    }

    final Digest digest;
    private State state = State.CONNECTING;
    private Path temp;
    private long size = -1;
    private long available;
    private Throwable failure;
    private int reserved;
    private boolean tempGone;
    private Runnable onTempFree;
    private Context cancelContext;
    private Runnable onCancel;
    private final List<Waiter> waiters = new ArrayList<>();

    Download(Digest digest) {
        this.digest = digest;
    }

    synchronized Snapshot snapshot() {
        return new Snapshot(state, available, size, failure);
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

    /** The first {@code bytes} bytes of the file are written. */
    void advanced(long bytes) {
        update(() -> available = bytes);
    }

    /** Every byte is written and verified; committing is under way. */
    void verified(long finalSize) {
        update(() -> {
            available = finalSize;
            size = finalSize;
            state = State.VERIFIED;
        });
    }

    /** Every byte is written, verified and committed. */
    void done(long finalSize) {
        update(() -> {
            available = finalSize;
            size = finalSize;
            state = State.DONE;
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
            wake = takeWaiters();
        }
        wake(wake);
        maybeFreeTemp();
    }

    /**
     * A future that completes, on the caller's context, once the state differs from what a reader
     * saw: more than {@code seenAvailable} bytes, or a new state.
     */
    Future<Void> await(Context context, State seenState, long seenAvailable) {
        Promise<Void> p = Promise.promise();
        synchronized (this) {
            if (state == seenState && available == seenAvailable) {
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

    private List<Waiter> takeWaiters() {
        if (waiters.isEmpty()) {
            return List.of();
        }
        List<Waiter> out = new ArrayList<>(waiters);
        waiters.clear();
        return out;
    }

    private static void wake(List<Waiter> list) {
        for (Waiter w : list) {
            w.context().runOnContext(v -> w.promise().tryComplete());
        }
    }
}
