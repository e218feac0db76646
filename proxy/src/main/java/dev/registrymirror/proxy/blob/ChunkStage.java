package dev.registrymirror.proxy.blob;

import dev.registrymirror.proxy.vertx.Blocking;
import dev.registrymirror.proxy.vertx.Owner;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.security.MessageDigest;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;

/**
 * One stage a download's chunks pass through in order on a worker thread, one batch at a time:
 * whatever arrived while the previous batch was worked on goes next. A download has two, side by
 * side: its {@link #writer file}, written with one gathering write per batch, and its {@link #hasher
 * digest}; so its readers' end (which waits for the digest) does not wait for the disk, and neither
 * waits on the event loop.
 *
 * <p>Why not Vert.x's {@code AsyncFile}: it runs each write as its own worker task, so the chunks of
 * one file were written by several threads at once. Measured on a cold 256 MiB pull: the writes cost
 * 0.3 CPU-seconds, mostly threads waiting on the file's lock in the kernel, where one thread writing
 * the same bytes in order takes 0.06 s; and each write's completion was one more task on the event
 * loop. The hashing (0.15 s for 256 MiB) ran on the event loop, between receiving and sending.
 *
 * <p>Implementation note: the queue and the counters belong to the owner's event loop; a batch is
 * handed whole to the worker and comes back (worked on, released) through the owner, so one thread at
 * a time touches the file or the hasher, each hand-off ordered by the worker pool's queue and the event
 * loop's. A batch that is done before its completion is registered completes at once, on the owner.
 */
final class ChunkStage {
    /** What the owner hears: how many bytes, from the start, are through; or that the work failed. */
    interface Listener {
        void through(ChunkStage stage, long bytes);

        void failed(ChunkStage stage, IOException e);
    }

    /** What is done with each batch, on a worker thread. */
    private interface Work {
        void apply(List<Download.Chunk> batch) throws IOException;
    }

    private final Owner owner;
    private final Blocking blocking;
    private final Work work;
    private final Runnable close;
    private final Listener listener;
    private final ArrayDeque<Download.Chunk> queued = new ArrayDeque<>();
    private long through;
    private boolean busy;
    private boolean stopped;

    private ChunkStage(Owner owner, Blocking blocking, Work work, Runnable close, Listener listener) {
        this.owner = owner;
        this.blocking = blocking;
        this.work = work;
        this.close = close;
        this.listener = listener;
    }

    /** Appends the chunks to {@code channel}, open for writing at its start; closed when stopped. */
    static ChunkStage writer(Owner owner, Blocking blocking, FileChannel channel, Listener listener) {
        return new ChunkStage(owner, blocking, batch -> {
            ByteBuffer[] buffers = new ByteBuffer[batch.size()];
            long total = 0;
            for (int i = 0; i < buffers.length; i++) {
                buffers[i] = nio(batch.get(i));
                total += buffers[i].remaining();
            }
            long done = 0;
            int first = 0;
            while (done < total) {
                done += channel.write(buffers, first, buffers.length - first);
                while (first < buffers.length && !buffers[first].hasRemaining()) {
                    first++;
                }
            }
        }, () -> blocking.run(() -> {
            channel.close();
            return null;
        }), listener);
    }

    /** Feeds the chunks to {@code hasher}. */
    static ChunkStage hasher(Owner owner, Blocking blocking, MessageDigest hasher, Listener listener) {
        return new ChunkStage(owner, blocking, batch -> {
            for (Download.Chunk c : batch) {
                hasher.update(nio(c));
            }
        }, () -> { }, listener);
    }

    private static ByteBuffer nio(Download.Chunk c) {
        return c.bytes.nioBuffer(c.bytes.readerIndex(), c.bytes.readableBytes());
    }

    /** Queues the next chunk; this stage holds one of its references until it is through. */
    void append(Download.Chunk chunk) {
        owner.check();
        if (stopped) {
            chunk.release();
            return;
        }
        queued.add(chunk);
        if (!busy) {
            next();
        }
    }

    /** Bytes through so far, from the start. */
    long through() {
        return through;
    }

    /** Nothing more is done: what is queued is dropped, and the file (if any) closed once no batch is under way. */
    void stop() {
        owner.check();
        if (stopped) {
            return;
        }
        stopped = true;
        queued.forEach(Download.Chunk::release);
        queued.clear();
        if (!busy) {
            close.run();
        }
    }

    private void next() {
        List<Download.Chunk> batch = new ArrayList<>(queued);
        queued.clear();
        busy = true;
        owner.on(blocking.run(() -> apply(batch))).onComplete(ar -> {
            busy = false;
            if (stopped) {
                close.run();
                return;
            }
            if (ar.failed()) {
                stop();
                listener.failed(this, ar.cause() instanceof IOException e ? e : new IOException(ar.cause()));
                return;
            }
            through += ar.result();
            listener.through(this, through);
            if (!queued.isEmpty() && !stopped && !busy) {
                next();
            }
        });
    }

    /** Works on a batch, in order, releasing each chunk. On a worker thread. */
    private long apply(List<Download.Chunk> batch) throws IOException {
        try {
            long total = 0;
            for (Download.Chunk c : batch) {
                total += c.bytes.readableBytes();
            }
            work.apply(batch);
            return total;
        } finally {
            batch.forEach(Download.Chunk::release);
        }
    }
}
