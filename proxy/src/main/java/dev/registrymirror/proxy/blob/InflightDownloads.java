package dev.registrymirror.proxy.blob;

import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.upstream.UpstreamClient;
import dev.registrymirror.proxy.vertx.Blocking;

import dev.registrymirror.cache.BlobStore;
import dev.registrymirror.cache.Digest;
import dev.registrymirror.cache.NotEnoughSpaceException;
import dev.registrymirror.metrics.MirrorMetrics;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.Vertx;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.file.AsyncFile;
import io.vertx.core.file.OpenOptions;
import io.vertx.core.http.HttpClientResponse;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpMethod;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.StandardOpenOption;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentMap;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The blob downloads under way, at most one per digest: the first request for an uncached blob
 * starts one, every concurrent request for it joins it. This is what the reference proxy lacks
 * (its {@code inflight} map has a "TODO … reuse").
 *
 * <p>Implementation note: the upstream body is hashed as it arrives and written to a temporary
 * file through an {@link AsyncFile}, with back-pressure: the upstream is paused while the file's
 * write queue is full, or while all downloads together hold their memory budget and this one has
 * writes pending. Writes may complete out of order, so the readable length advances only
 * over the contiguous prefix of completed writes. At the end, the size and digest are checked; only
 * then is the file committed to the store and the download marked done. Otherwise it fails, and
 * readers break their connections.
 */
public final class InflightDownloads {
    private static final Logger LOG = LoggerFactory.getLogger(InflightDownloads.class);

    private final Vertx vertx;
    private final Blocking blocking;
    private final BlobStore store;
    private final MirrorMetrics metrics;
    /** Free space a blob download leaves on the disk at least, beyond the blob itself. */
    static final long HEADROOM = 64L << 20;
    /** Bytes of a download that may wait to be written to its file before the upstream is paused. */
    static final int WRITE_QUEUE_BYTES = 8 << 20;

    private final ConcurrentMap<Digest, Download> downloads = new ConcurrentHashMap<>();
    /**
     * The memory all downloads together may hold: chunks kept for readers, and chunks not yet written
     * (over it, downloads with writes pending stop reading their upstreams until the disk catches up).
     */
    private final Download.Budget memory;
    /** Where each chunk's one copy goes: pooled direct buffers (tests inject one that runs out). */
    private final ByteBufAllocator allocator;
    private volatile boolean stopping;
    private final Promise<Void> ended = Promise.promise();

    /**
     * @param memoryLimit the bytes downloads may hold in memory ({@code server.downloadMemory}); -1 for an
     *                    eighth of the heap (Java's default cap on direct memory is the heap size), 16-256 MiB
     */
    public InflightDownloads(Vertx vertx, Blocking blocking, BlobStore store, MirrorMetrics metrics, long memoryLimit,
                             ByteBufAllocator allocator) {
        this.vertx = vertx;
        this.blocking = blocking;
        this.store = store;
        this.metrics = metrics;
        this.allocator = allocator;
        this.memory = new Download.Budget(memoryLimit >= 0 ? memoryLimit
                : Math.min(256L << 20, Math.max(16L << 20, Runtime.getRuntime().maxMemory() / 8)));
        metrics.downloadsInFlight(downloads::size);
        metrics.downloadMemory(memory::used, memory.limit);
    }

    /**
     * The size of the blob being downloaded with this digest, once the upstream has announced it (or
     * all of it is verified); -1 when there is no such download, its size is not known yet, or it failed.
     */
    long announcedSize(Digest digest) {
        Download d = downloads.get(digest);
        if (d == null) {
            return -1;
        }
        Download.Snapshot s = d.snapshot();
        return s.state() == Download.State.FAILED ? -1 : s.size();
    }

    /** Downloads under way now. */
    public int size() {
        return downloads.size();
    }

    /**
     * Stops every download under way (the mirror is stopping); their waiting readers fail. A download
     * that has every byte is not stopped: it finishes its writes and its commit, so that a blob a client
     * was served is not lost. The future completes once no download is left.
     */
    public Future<Void> abandonAll() {
        stopping = true;
        for (Download d : downloads.values()) {
            d.cancel();
        }
        if (downloads.isEmpty()) {
            ended.tryComplete();
        }
        return ended.future();
    }

    /** {@code d} has ended (stored, or failed): it leaves the map. */
    private void remove(Download d) {
        downloads.remove(d.digest, d);
        if (stopping && downloads.isEmpty()) {
            ended.tryComplete();
        }
    }

    /**
     * The download of {@code digest}, started now from {@code upstream} unless one is under way;
     * null when the blob was committed since the caller looked it up (a download leaves this map only
     * after its commit, so this check cannot miss one that just ended).
     */
    Download join(Digest digest, UpstreamClient upstream, String repository) {
        boolean[] started = {false};
        Download d = downloads.computeIfAbsent(digest, k -> {
            if (store.knownPresent(k)) {
                return null;
            }
            started[0] = true;
            return new Download(k, memory);
        });
        if (started[0]) {
            start(d, upstream, repository);
        }
        return d;
    }

    /** A temporary file made ready for a download, and the free space seen when it was made. */
    private record Temp(Path path, AsyncFile file, long free) {
    }

    private void start(Download d, UpstreamClient upstream, String repository) {
        // The upstream is asked first; the temporary file is made while it answers, so the first bytes do not wait for it.
        Future<HttpClientResponse> answer = upstream.blob(HttpMethod.GET, repository, d.digest);
        Future<Temp> temp = prepareTemp();
        LOG.info("upstream {}: fetching blob {} for {}", upstream.name(), d.digest, repository);
        Future.join(temp, answer).onComplete(ignored -> {
            if (answer.failed() || answer.result().statusCode() != 200 || stopping) {
                temp.onSuccess(this::discard);
                if (answer.failed()) {
                    fail(d, upstream, UpstreamClient.transportError(upstream.name(), "upstream", answer.cause()), null);
                } else if (answer.result().statusCode() != 200) {
                    fail(d, upstream, upstream.failure(answer.result(), "BLOB_UNKNOWN", "blob " + d.digest), null);
                } else {
                    abandon(answer.result());
                    fail(d, upstream, new RegistryError(503, "UNAVAILABLE", "the mirror is shutting down"), null);
                }
                return;
            }
            HttpClientResponse resp = answer.result();
            long announced = parseLength(resp.getHeader(HttpHeaders.CONTENT_LENGTH));
            Throwable problem = temp.failed() ? temp.cause()
                    : temp.result().free() < Math.max(announced, 0) + HEADROOM
                    ? new NotEnoughSpaceException(temp.result().free(), Math.max(announced, 0) + HEADROOM)
                    : null;
            if (problem != null) {
                temp.onSuccess(this::discard);
                abandon(resp);
                storageFailed(d, upstream, new StorageUnavailable("cannot store blob " + d.digest + ": "
                        + problem.getMessage(), problem));
                return;
            }
            new Writer(d, upstream, resp, temp.result().path(), temp.result().file(), announced).begin();
        });
    }

    /**
     * Creates and opens a temporary file on a worker (one hop), noting the free space. One byte is
     * written to it first: readers are sent bytes from memory before the file has them, so a disk
     * that refuses writes must be found now, while every request can still go to the upstream.
     */
    private Future<Temp> prepareTemp() {
        return blocking.run(() -> {
            long free = store.usableSpace();
            Path path = store.newTempFile();
            try {
                try (FileChannel probe = FileChannel.open(path, StandardOpenOption.WRITE)) {
                    probe.write(ByteBuffer.allocate(1), 0);
                    probe.truncate(0); // an empty blob stays empty
                }
                AsyncFile file = vertx.fileSystem().openBlocking(path.toString(),
                        new OpenOptions().setWrite(true).setCreate(false).setRead(false));
                return new Temp(path, file, free);
            } catch (IOException | RuntimeException e) {
                store.discard(path);
                throw e;
            }
        });
    }

    private void discard(Temp temp) {
        temp.file().close().onComplete(v -> discardLater(temp.path()));
    }

    private static void abandon(HttpClientResponse resp) {
        resp.exceptionHandler(e -> { });
        resp.request().reset();
    }

    /** The cache cannot take the blob: counted, logged, and the waiting requests go to the upstream directly. */
    private void storageFailed(Download d, UpstreamClient upstream, StorageUnavailable e) {
        metrics.storageError(e.reason);
        LOG.warn("{}; requests that have not started are answered from upstream {} without storing",
                e.getMessage(), upstream.name());
        fail(d, upstream, e, null);
    }

    /** Streams one upstream body into its temporary file. Runs on the context that started the download. */
    private final class Writer {
        private final Download d;
        private final UpstreamClient upstream;
        private final HttpClientResponse resp;
        private final Path temp;
        private final AsyncFile file;
        private final long announced;
        private final MessageDigest hasher;
        private final TreeMap<Long, Long> completed = new TreeMap<>();
        private long received;
        private long written;
        /** The verified length once the body has ended well; -1 before. */
        private long verifiedAt = -1;
        /** Whether the outcome is decided: verified, or failed for the disk. */
        private boolean settled;
        private boolean over;
        /** The upstream is paused until the file catches up (see {@link #mustWait}). */
        private boolean pausedForDisk;
        private long lastChunkNanos = System.nanoTime();
        private final long startNanos = lastChunkNanos;
        private long watchdog = -1;

        Writer(Download d, UpstreamClient upstream, HttpClientResponse resp, Path temp, AsyncFile file, long announced) {
            this.d = d;
            this.upstream = upstream;
            this.resp = resp;
            this.temp = temp;
            this.file = file;
            this.announced = announced;
            this.hasher = d.digest.newHasher();
        }

        void begin() {
            d.onTempFree(() -> discardLater(temp));
            d.onCancel(vertx.getOrCreateContext(), () -> abort("the mirror is stopping", null,
                    new RegistryError(503, "UNAVAILABLE", "the mirror is shutting down")));
            d.streaming(temp, announced);
            file.exceptionHandler(this::diskFailed);
            // Vert.x's default (128 KiB) paused the upstream every few chunks: stop-and-go at a fraction
            // of the link's speed. Writes to the page cache keep up; this only bounds a slow disk.
            file.setWriteQueueMaxSize(WRITE_QUEUE_BYTES);
            resp.exceptionHandler(err -> {
                if (!pausedForDisk && System.nanoTime() - lastChunkNanos >= idleNanos() * 9 / 10) {
                    idle(); // the connection's idle timeout closed it
                    return;
                }
                RegistryError e = UpstreamClient.transportError(upstream.name(), "upstream", err);
                abort(e.getMessage(), e.upstreamReason);
            });
            resp.handler(this::chunk);
            resp.endHandler(v -> end());
            long idle = idleNanos();
            watchdog = vertx.setPeriodic(Math.max(10, idle / 4_000_000), t -> {
                if (!pausedForDisk && System.nanoTime() - lastChunkNanos > idle) {
                    idle();
                }
            });
            resp.resume();
        }

        /** The upstream went silent for longer than its idle timeout. */
        private void idle() {
            abort("upstream sent nothing for " + upstream.upstream().idleTimeout().toMillis() + " ms", "timeout",
                    RegistryError.unavailable(upstream.name(), "no data in time", "timeout"));
        }

        private long idleNanos() {
            return upstream.upstream().idleTimeout().toNanos();
        }

        private void chunk(Buffer buf) {
            if (over) {
                return;
            }
            lastChunkNanos = System.nanoTime();
            int len = buf.length();
            if (announced >= 0 && received + len > announced) {
                abort("upstream sent more than its Content-Length of " + announced, "protocol");
                return;
            }
            // One copy into a pooled direct buffer, which the file write and every reader's socket
            // then take as it is (a heap buffer is copied again by each of them). Made before anything
            // counts the chunk as received: a chunk lost here must end the download, not leave a gap.
            ByteBuf bytes;
            try {
                bytes = allocator.directBuffer(len, len);
            } catch (OutOfMemoryError e) {
                abort("no memory for the next chunk (" + e.getMessage() + ")", null,
                        new RegistryError(503, "UNAVAILABLE", "the mirror is out of memory for downloads"));
                return;
            }
            bytes.writeBytes(buf.getByteBuf());
            long position = received;
            received += len;
            metrics.upstreamBytes(upstream.name(), len);
            UpstreamClient.hash(hasher, buf);
            d.arrived(position, bytes.retain());
            file.write(Buffer.buffer(bytes), position).onComplete(ar -> {
                bytes.release();
                if (ar.succeeded()) {
                    wrote(position, len);
                } else {
                    diskFailed(ar.cause());
                }
            });
            String wait = mustWait();
            if (wait != null) {
                resp.pause();
                pausedForDisk = true;
                metrics.downloadPaused(wait);
                if (wait.equals("disk")) {
                    file.drainHandler(v -> resumeIfWritten());
                } // else each completed write checks (wrote)
            }
        }

        /**
         * Why the upstream must wait for the file before the next chunk, or null: "disk" when this
         * download's write queue is full, "memory" when all downloads together hold their budget and
         * this one has writes pending (one with none may always read a chunk, so none waits forever).
         */
        private String mustWait() {
            if (file.writeQueueFull()) {
                return "disk";
            }
            return received > written && memory.over() ? "memory" : null;
        }

        private void resumeIfWritten() {
            if (pausedForDisk && !over && mustWait() == null) {
                pausedForDisk = false;
                lastChunkNanos = System.nanoTime();
                resp.resume();
            }
        }

        private void wrote(long position, long len) {
            completed.put(position, len);
            Long next;
            long before = written;
            while ((next = completed.remove(written)) != null) {
                written += next;
            }
            if (written != before) {
                d.written(written);
                if (written == verifiedAt) {
                    verified();
                }
                resumeIfWritten();
            }
        }

        private void end() {
            if (over) {
                return;
            }
            if (announced >= 0 && received != announced) {
                abort("upstream body ended after " + received + " of " + announced + " bytes", "reset");
                return;
            }
            if (!d.digest.matches(hasher.digest())) {
                abort("digest mismatch: upstream bytes do not hash to " + d.digest, "digest_mismatch");
                return;
            }
            over = true;
            vertx.cancelTimer(watchdog);
            verifiedAt = received;
            if (written == received) {
                verified();
            } // else wrote() calls it once the last write is done
        }

        /**
         * Every byte is verified and written: readers may finish now. Then the file is closed and
         * committed, off their path; if that fails the blob was served but is not stored.
         */
        private void verified() {
            if (settled) {
                return;
            }
            settled = true;
            long size = verifiedAt;
            d.verified(size);
            file.close()
                    .compose(v -> blocking.run(() -> store.commit(temp, d.digest, size)))
                    .onComplete(ar -> {
                        remove(d);
                        if (ar.succeeded()) {
                            long millis = Math.max(1, (System.nanoTime() - startNanos) / 1_000_000);
                            LOG.info("upstream {}: stored blob {} ({} bytes in {} ms, {} MiB/s)", upstream.name(),
                                    d.digest, size, millis, (size * 1000 / millis) >> 20);
                        } else {
                            StorageUnavailable e = new StorageUnavailable("cannot commit blob " + d.digest
                                    + " to the cache: " + ar.cause().getMessage(), ar.cause());
                            metrics.storageError(e.reason);
                            LOG.warn("{}; it was served but is not stored", e.getMessage());
                        }
                        d.done(size);
                    });
        }

        /** Stops the download for an upstream fault; {@code reason} is the upstream-error label. */
        private void abort(String why, String reason) {
            abort(why, reason, RegistryError.badGateway(upstream.name(), why, reason));
        }

        /** Stops the download because its temporary file cannot be written. */
        private void diskFailed(Throwable err) {
            boolean awaitingWrites = over && verifiedAt >= 0 && !settled;
            if (over && !awaitingWrites) {
                return;
            }
            over = true;
            settled = true;
            if (!awaitingWrites) {
                stopReading();
            }
            file.close();
            storageFailed(d, upstream, new StorageUnavailable("cannot write blob " + d.digest + " to the cache after "
                    + received + " bytes: " + err.getMessage(), err));
        }

        private void stopReading() {
            vertx.cancelTimer(watchdog);
            resp.handler(null);
            resp.endHandler(null);
            resp.request().reset();
        }

        private void abort(String why, String reason, Throwable error) {
            if (over) {
                return;
            }
            over = true;
            LOG.warn("upstream {}: blob {} failed after {} bytes: {}", upstream.name(), d.digest, received, why);
            stopReading();
            file.close();
            fail(d, upstream, error, reason);
        }
    }

    private void fail(Download d, UpstreamClient upstream, Throwable error, String countReason) {
        remove(d);
        if (countReason != null) {
            metrics.upstreamError(upstream.name(), countReason);
        }
        d.failed(error);
    }

    /** Deletes a temporary file on a worker thread. */
    private void discardLater(Path temp) {
        blocking.run(() -> {
            store.discard(temp);
            return null;
        });
    }

    private static long parseLength(String header) {
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
}
