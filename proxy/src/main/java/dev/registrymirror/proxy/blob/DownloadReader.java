package dev.registrymirror.proxy.blob;

import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.vertx.Blocking;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.vertx.core.Context;
import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.function.Consumer;

/**
 * One client's view of a download as a {@link Pump.Source}: bytes {@code [from, to)} of the blob, from
 * the download's window in memory while the client keeps up, from the temporary file when it falls
 * behind. A response that ends where the blob ends has its last byte held back until the download
 * is verified, so a client never sees the clean end of wrong or short content; one that ends before
 * (a range that lazy-pulling snapshotters read) is complete as soon as its bytes are there, since no
 * digest covers a range. Runs on the client's context; one file read at a time (a second would send
 * its bytes twice).
 */
final class DownloadReader implements Pump.Source {
    /** The largest piece read or taken at once. */
    static final int CHUNK = 256 * 1024;

    private final Download d;
    private final Context context;
    private final Blocking blocking;
    private final ByteBufAllocator allocator;
    private final MemoryBudget budget;
    /** Exclusive end of what this response carries, -1 when unknown (the whole blob, size not announced). */
    private final long to;
    /** Whether {@code to} is the blob's end, whose last byte waits for verification. */
    private final boolean endOfBlob;
    private long position;
    private Consumer<Pump.Piece> data;
    private Runnable end;
    private Consumer<Throwable> failed;
    private FileChannel file;
    private boolean paused = true;
    private boolean reading;
    private boolean finished;
    private boolean reserved = true;

    /** Reads a download the caller has {@link Download#reserve reserved}; this reader releases it. */
    DownloadReader(Download d, Context context, Blocking blocking, ByteBufAllocator allocator, MemoryBudget budget,
                   long from, long to, boolean endOfBlob) {
        this.d = d;
        this.context = context;
        this.blocking = blocking;
        this.allocator = allocator;
        this.budget = budget;
        this.position = from;
        this.to = to;
        this.endOfBlob = endOfBlob;
    }

    @Override
    public void start(Consumer<Pump.Piece> data, Runnable end, Consumer<Throwable> failed) {
        this.data = data;
        this.end = end;
        this.failed = failed;
    }

    @Override
    public void pause() {
        paused = true;
    }

    @Override
    public void resume() {
        if (paused) {
            paused = false;
            pump();
        }
    }

    @Override
    public void cancel() {
        if (finished) {
            return;
        }
        finished = true;
        closeFile();
        if (!reading) {
            unreserve();
        } // else the read's completion releases it
    }

    /** Sends what is there, from memory where it can. */
    private void pump() {
        while (!paused && !finished && !reading) {
            Download.Snapshot s = d.snapshot();
            if (s.state() == Download.State.FAILED) {
                finish();
                failed.accept(s.failure());
                return;
            }
            boolean done = s.complete();
            long limit = to >= 0 ? Math.min(s.available(), to) : s.available();
            if (!done && endOfBlob && to >= 0 && limit == to) {
                limit = to - 1; // hold the last byte back until the blob is verified
            }
            if (position < limit) {
                int len = (int) Math.min(CHUNK, limit - position);
                Pump.Piece piece = d.take(position, len);
                if (piece == null) {
                    // Behind the window (or the window is gone): everything before it is in the file.
                    long onDisk = d.snapshot().onDisk();
                    if (onDisk > position) {
                        readFile(position, (int) Math.min(len, onDisk - position));
                        return;
                    }
                    continue; // the download failed or ended meanwhile
                }
                deliver(piece);
                continue;
            }
            boolean reachedEnd = to >= 0 ? position >= to : done && position >= s.available();
            if (reachedEnd && (done || !endOfBlob)) {
                finish();
                end.run();
                return;
            }
            d.await(context, s).onComplete(v -> pump());
            return;
        }
    }

    private void deliver(Pump.Piece piece) {
        position += piece.length();
        data.accept(piece);
    }

    private void readFile(long at, int len) {
        reading = true;
        FileChannel open = file;
        Path temp = d.temp();
        blocking.run(() -> {
            FileChannel ch = open != null ? open : FileChannel.open(temp, StandardOpenOption.READ);
            try {
                return new FileRead(ch, read(ch, at, len));
            } catch (IOException | RuntimeException e) {
                if (open == null) {
                    ch.close();
                }
                throw e;
            }
        }).onComplete(ar -> {
            reading = false;
            if (ar.failed()) {
                if (!finished) {
                    finish();
                    failed.accept(new RegistryError(500, "UNKNOWN", "cannot read the cache"));
                } else {
                    unreserve();
                }
                return;
            }
            if (file == null) {
                file = ar.result().channel();
                unreserve(); // the open handle keeps the file readable
            }
            ByteBuf bytes = ar.result().bytes();
            if (finished) {
                bytes.release();
                closeFile();
                unreserve();
                return;
            }
            int n = bytes.readableBytes();
            budget.charge(n);
            deliver(new Pump.Piece(bytes, () -> {
                budget.refund(n);
                bytes.release();
            }));
            pump();
        });
    }

    /**
     * Reads up to {@code len} bytes at {@code position} into a pooled direct buffer of the transfers'
     * allocator, which the socket write then takes without another copy. Blocks: call it on a worker thread.
     */
    private ByteBuf read(FileChannel ch, long at, int len) throws IOException {
        ByteBuf buf = allocator.directBuffer(len, len);
        try {
            while (buf.isWritable()) {
                int n = buf.writeBytes(ch, at + buf.writerIndex(), buf.writableBytes());
                if (n < 0) {
                    break;
                }
            }
            return buf;
        } catch (IOException | RuntimeException e) {
            buf.release();
            throw e;
        }
    }

    private void finish() {
        finished = true;
        closeFile();
        unreserve();
    }

    private void closeFile() {
        FileChannel f = file;
        file = null;
        if (f != null) {
            blocking.run(() -> {
                f.close();
                return null;
            });
        }
    }

    private void unreserve() {
        if (reserved) {
            reserved = false;
            d.release();
        }
    }

    private record FileRead(FileChannel channel, ByteBuf bytes) {
    }
}
