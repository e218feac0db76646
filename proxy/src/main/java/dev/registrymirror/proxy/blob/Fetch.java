package dev.registrymirror.proxy.blob;

import dev.registrymirror.proxy.upstream.Sender;

import dev.registrymirror.cache.BlobStore;
import dev.registrymirror.cache.NotEnoughSpaceException;
import dev.registrymirror.metrics.MirrorMetrics;
import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.upstream.Bodies;
import dev.registrymirror.proxy.upstream.UpstreamClient;
import dev.registrymirror.proxy.vertx.Blocking;
import dev.registrymirror.proxy.vertx.Owner;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.Vertx;
import io.vertx.core.http.HttpClientResponse;
import io.vertx.core.http.HttpMethod;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;
import java.util.function.Consumer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One blob's way from its upstream into the store: the upstream is asked and a temporary file made
 * at the same time; then the {@link Pump} moves the {@link UpstreamBody} (size-checked) into the
 * file, hashed as it is written, and the download's window; once every byte is written and verified
 * the file is committed to the store.
 *
 * <p>Implementation note: a fetch belongs to the event loop of the request that started it
 * ({@link Owner}). Its upstream answer, file writes, timers and commit all complete there, and every
 * method that changes the {@link Download} checks it; another loop's callback (a token fetched for
 * another request, a reader's cancel, the stop) is brought back first. One batch of writes is under
 * way at a time ({@link ChunkStage}), so what is written is always a prefix of the file.
 */
final class Fetch {
    private static final Logger LOG = LoggerFactory.getLogger(Fetch.class);
    /** Free space a blob download leaves on the disk at least, beyond the blob itself. */
    static final long HEADROOM = 64L << 20;
    /** Bytes of a download that may wait to be written to its file before the upstream is paused. */
    static final int WRITE_QUEUE_BYTES = 8 << 20;
    /** A blob of unknown size re-reads the free space each time this much more has arrived. */
    static final long SPACE_CHECK_BYTES = 64L << 20;

    /** What every fetch shares; {@code replicas} is null when the mirror runs alone. */
    record Settings(Vertx vertx, Blocking blocking, BlobStore store, MirrorMetrics metrics, MemoryBudget budget,
                    ByteBufAllocator allocator, long maxBlobSize, long minFree, Replicas replicas) {
    }

    /** Who answered the fetch: the upstream, or another replica of the cluster. */
    private record Source(HttpClientResponse resp, Sender sender, java.net.URI replica) {
        boolean upstream() {
            return replica == null;
        }
    }

    /** A temporary file made ready for a download, and the free space seen when it was made. */
    private record Temp(Path path, FileChannel file, long free) {
    }

    private final Settings s;
    private final Download d;
    private final Owner owner;
    private final UpstreamClient upstream;
    private final String repository;
    /** Recorded as the blob's origin with its commit; null for none. */
    private final String origin;
    /** Told once the download has ended, stored or not. */
    private final Consumer<Download> ended;
    /** Whether the blob's first owner may be asked as such (false when another replica asked for it). */
    private final boolean mayAskOwner;
    private Sender sender;
    private final long startNanos = System.nanoTime();
    private UpstreamBody body;
    private FileSink sink;
    /** The limit of a blob of unknown size, which the free space keeps lowering; null for a known size. */
    private SpaceLimit spaceLimit;
    /** Set once every byte has arrived and matched: the download then finishes whatever happens. */
    private boolean complete;

    Fetch(Settings settings, Download d, Owner owner, UpstreamClient upstream, String repository, String origin,
          boolean mayAskOwner, Consumer<Download> ended) {
        this.origin = origin;
        this.mayAskOwner = mayAskOwner;
        this.sender = Sender.of(upstream);
        this.s = settings;
        this.d = d;
        this.owner = owner;
        this.upstream = upstream;
        this.repository = repository;
        this.ended = ended;
    }

    /** Starts the fetch; call it on the owner's event loop. */
    void start(boolean stopping) {
        owner.check();
        // The source is asked first; the temporary file is made while it answers, so the first bytes do not wait for it.
        Future<Source> answer = owner.on(source());
        Future<Temp> temp = owner.on(prepareTemp());
        Future.join(temp, answer).onComplete(ignored -> begin(answer, temp, stopping));
    }

    /**
     * Who sends the bytes: in a cluster, the replicas that may have them (see {@link
     * Replicas#beforeUpstream}), in order, then the upstream. A replica asked as the blob's owner
     * answers for the upstream: its error is the answer; one asked as a past holder that does not have
     * it (or any replica that cannot be reached) passes the turn to the next.
     */
    private Future<Source> source() {
        List<Replicas.Peer> peers = s.replicas() == null ? List.of()
                : s.replicas().beforeUpstream(d.digest, mayAskOwner);
        return ask(peers, 0);
    }

    private Future<Source> ask(List<Replicas.Peer> peers, int i) {
        if (i == peers.size()) {
            LOG.info("upstream {}: fetching blob {} for {}", upstream.name(), d.digest, repository);
            return upstream.blob(HttpMethod.GET, repository, d.digest).map(r -> new Source(r, Sender.of(upstream), null));
        }
        Replicas.Peer peer = peers.get(i);
        Replicas replicas = s.replicas();
        return replicas.ask(peer.replica(), HttpMethod.GET, upstream.name(), repository, d.digest, peer.ask(), null)
                .transform(ar -> {
                    if (ar.succeeded() && ar.result().statusCode() == 200) {
                        LOG.info("cluster: fetching blob {} for {} from {} ({})", d.digest, repository,
                                peer.replica(), peer.ask() == Replicas.Ask.OWNER ? "its owner" : "it held it");
                        return Future.succeededFuture(new Source(ar.result(), replicas.sender(peer.replica()),
                                peer.replica()));
                    }
                    if (ar.succeeded() && peer.ask() == Replicas.Ask.OWNER) {
                        return replicas.error(peer.replica(), ar.result()).compose(Future::failedFuture);
                    }
                    if (ar.succeeded()) {
                        Bodies.discard(ar.result());
                    } else {
                        replicas.cluster().unreachable(peer.replica(), ar.cause(),
                                "blobs it may hold are asked of the next replica or the upstream meanwhile");
                    }
                    return ask(peers, i + 1);
                });
    }

    private void begin(Future<Source> answer, Future<Temp> temp, boolean stopping) {
        owner.check();
        if (answer.failed() || answer.result().resp().statusCode() != 200 || stopping) {
            temp.onSuccess(this::discard);
            if (answer.failed()) {
                fail(answer.cause() instanceof RegistryError e ? e
                        : UpstreamClient.transportError(upstream.name(), "upstream", answer.cause()));
            } else if (answer.result().resp().statusCode() != 200) {
                fail(upstream.failure(answer.result().resp(), "BLOB_UNKNOWN", "blob " + d.digest));
            } else {
                Bodies.close(answer.result().resp());
                fail(RegistryError.shuttingDown());
            }
            return;
        }
        Source source = answer.result();
        sender = source.sender();
        HttpClientResponse resp = source.resp();
        long announced = Bodies.length(resp);
        if (announced > s.maxBlobSize()) {
            temp.onSuccess(this::discard);
            Bodies.close(resp);
            sender.countError("protocol");
            LOG.warn("{}: blob {} announces {} bytes, more than storage.maxBlobSize ({}); refused",
                    sender.name(), d.digest, announced, s.maxBlobSize());
            fail(tooLarge(announced));
            return;
        }
        Throwable problem = temp.failed() ? temp.cause()
                : temp.result().free() < Math.max(announced, 0) + HEADROOM
                ? new NotEnoughSpaceException(temp.result().free(), Math.max(announced, 0) + HEADROOM)
                : null;
        if (problem != null) {
            temp.onSuccess(this::discard);
            Bodies.close(resp);
            storageFailed(new StorageUnavailable("cannot store blob " + d.digest + ": " + problem.getMessage(), problem));
            return;
        }
        Temp t = temp.result();
        if (!d.streaming(t.path(), announced)) {
            // Cancelled (the mirror stopping) while the upstream was asked: it stays failed.
            discard(t);
            Bodies.close(resp);
            ended.accept(d);
            return;
        }
        d.onTempFree(() -> discardLater(t.path()));
        spaceLimit = announced < 0 ? new SpaceLimit(t.free()) : null;
        UpstreamBody.Limit limit = spaceLimit != null ? spaceLimit
                : UpstreamBody.Limit.fixed(announced, this::tooLarge); // announced was checked against maxBlobSize
        // The body checks the length; the file sink hashes as it writes (off the event loop) and ends
        // only once the digest matches.
        body = new UpstreamBody(owner, s.vertx(), resp, sender, null, "blob " + d.digest, announced, limit, s.budget());
        sink = new FileSink(t.file());
        d.onCancel(this::cancel);
        Pump.pipe(body, sink).onComplete(ar -> {
            if (ar.succeeded()) {
                commit(t.path(), body.received());
            } else if (ar.cause() instanceof StorageUnavailable e) {
                storageFailed(e);
            } else {
                fail(ar.cause());
            }
        });
    }

    /** The mirror is stopping: the transfer stops, unless every byte is there already. */
    private void cancel() {
        owner.check();
        if (complete || sink == null || sink.failed) {
            return;
        }
        RegistryError stopping = RegistryError.shuttingDown();
        LOG.warn("{}: blob {} abandoned after {} bytes: the mirror is stopping", sender.name(), d.digest,
                body.received());
        body.cancel();
        sink.fail(stopping);
        fail(stopping);
    }

    /** Every byte is verified and written: readers may finish now; then the file is closed and committed. */
    private void commit(Path temp, long size) {
        owner.check();
        d.verified(size);
        FileChannel file = sink.channel();
        s.blocking().run(() -> {
                    file.close();
                    return s.store().commit(temp, d.digest, size, origin);
                })
                .onComplete(ar -> owner.run(() -> {
                    ended.accept(d);
                    if (ar.succeeded()) {
                        long millis = Math.max(1, (System.nanoTime() - startNanos) / 1_000_000);
                        LOG.info("{}: stored blob {} ({} bytes in {} ms, {} MiB/s)",
                                sender == null || sender.name().equals(upstream.name()) ? "upstream " + upstream.name()
                                        : "cluster", d.digest, size, millis, (size * 1000 / millis) >> 20);
                        if (s.replicas() != null) {
                            s.replicas().keepCopies(d.digest, upstream.name(), repository);
                        }
                    } else {
                        StorageUnavailable e = new StorageUnavailable("cannot commit blob " + d.digest
                                + " to the cache: " + ar.cause().getMessage(), ar.cause());
                        s.metrics().storageError(e.reason);
                        LOG.warn("{}; it was served but is not stored", e.getMessage());
                    }
                    d.done(size);
                }));
    }

    /** The cache cannot take the blob: counted, logged, and the waiting requests go to the upstream directly. */
    private void storageFailed(StorageUnavailable e) {
        s.metrics().storageError(e.reason);
        LOG.warn("{}; requests that have not started are answered from upstream {} without storing",
                e.getMessage(), upstream.name());
        fail(e);
    }

    private void fail(Throwable error) {
        owner.check();
        ended.accept(d);
        d.failed(error);
    }

    private RegistryError tooLarge(long bytes) {
        return RegistryError.badGateway(sender.name(), "blob " + d.digest + " has " + bytes
                + " bytes or more, over storage.maxBlobSize (" + s.maxBlobSize() + ")", "protocol");
    }

    /**
     * A blob of unknown size (no {@code Content-Length}) may grow to {@code storage.maxBlobSize}, or to
     * the free space less {@code minFree} (and some headroom), whichever is less; the free space is
     * read again as it grows ({@link FileSink}).
     */
    private final class SpaceLimit implements UpstreamBody.Limit {
        private long spaceCap;

        SpaceLimit(long free) {
            this.spaceCap = free - s.minFree() - HEADROOM;
        }

        @Override
        public long max() {
            return Math.min(s.maxBlobSize(), spaceCap);
        }

        void freeNow(long received, long free) {
            spaceCap = Math.min(spaceCap, received + free - s.minFree() - HEADROOM);
        }

        @Override
        public Throwable exceeded(long received) {
            if (received > s.maxBlobSize()) {
                sender.countError("protocol");
                return tooLarge(received);
            }
            return new StorageUnavailable("cannot store blob " + d.digest + " of unknown size: " + received
                    + " bytes would leave less than storage.minFree on the disk",
                    new NotEnoughSpaceException(spaceCap - received, received));
        }
    }

    /**
     * Writes the pieces into the temporary file and the download's window: each piece is copied once
     * into a direct buffer, which the file, the digest and every reader's socket take as it is. Two
     * {@link ChunkStage}s take each chunk on workers, side by side: the file and the digest. Once every
     * byte has arrived and hashes to the digest, the download is verified and its readers finish,
     * while the file may still be written; the end completes once it is.
     */
    private final class FileSink implements Pump.Sink, ChunkStage.Listener {
        private final FileChannel channel;
        private final ChunkStage file;
        private final java.security.MessageDigest digest;
        private final ChunkStage hash;
        private long received;
        private long nextSpaceCheck = SPACE_CHECK_BYTES;
        private Runnable drained;
        private Promise<Void> end;
        private Consumer<Throwable> onFailure;
        private boolean verified;
        boolean failed;

        FileSink(FileChannel channel) {
            this.channel = channel;
            this.file = ChunkStage.writer(owner, s.blocking(), channel, this);
            this.digest = d.digest.newHasher();
            this.hash = ChunkStage.hasher(owner, s.blocking(), digest, this);
        }

        @Override
        public void write(Pump.Piece piece) {
            owner.check();
            int len = piece.length();
            // One copy into a direct buffer. Made before anything counts the piece as received: a chunk
            // lost here must end the download, not leave a gap.
            ByteBuf bytes;
            try {
                bytes = s.allocator().directBuffer(len, len);
            } catch (OutOfMemoryError e) {
                piece.release().run();
                LOG.warn("{}: blob {} failed after {} bytes: no memory for the next chunk ({})",
                        sender.name(), d.digest, received, e.getMessage());
                breakDown(new RegistryError(503, "UNAVAILABLE", "the mirror is out of memory for downloads"));
                return;
            }
            bytes.writeBytes(piece.bytes(), piece.bytes().readerIndex(), len);
            piece.release().run();
            long position = received;
            received += len;
            // The window's reference, the file's and the digest's.
            Download.Chunk chunk = new Download.Chunk(position, bytes, s.budget(), 3);
            d.arrived(chunk);
            file.append(chunk);
            hash.append(chunk);
            if (spaceLimit != null && received >= nextSpaceCheck) {
                // Other files (or other downloads) may be filling the disk meanwhile: look again.
                nextSpaceCheck = received + SPACE_CHECK_BYTES;
                long at = received;
                owner.on(s.blocking().run(() -> s.store().usableSpace())).onSuccess(free -> spaceLimit.freeNow(at, free));
            }
        }

        /** Bytes that arrived and are not yet both written and hashed. */
        private long pending() {
            return received - Math.min(file.through(), hash.through());
        }

        /**
         * Whether the upstream must wait: more than {@link #WRITE_QUEUE_BYTES} wait to be written or
         * hashed, or all transfers together hold their budget and this one has work pending (one with
         * none may always read a chunk, so none waits forever).
         */
        @Override
        public boolean full() {
            long pending = pending();
            return !failed && (pending > WRITE_QUEUE_BYTES || (pending > 0 && s.budget().over()));
        }

        @Override
        public void whenDrained(Runnable action) {
            drained = action;
            s.metrics().downloadPaused(pending() > WRITE_QUEUE_BYTES ? "disk" : "memory");
        }

        @Override
        public void through(ChunkStage stage, long bytes) {
            owner.check();
            if (failed) {
                return;
            }
            if (stage == file) {
                d.written(bytes);
            }
            if (end != null) {
                finishing();
            }
            if (drained != null && !full()) {
                Runnable r = drained;
                drained = null;
                r.run();
            }
        }

        @Override
        public void failed(ChunkStage stage, java.io.IOException err) {
            breakDown(new StorageUnavailable("cannot write blob " + d.digest + " to the cache after "
                    + file.through() + " bytes: " + err.getMessage(), err));
        }

        @Override
        public Future<Void> end() {
            owner.check();
            complete = true; // every byte arrived: only the digest and the writes remain
            end = Promise.promise();
            finishing();
            return end.future();
        }

        /**
         * Every byte has arrived: once hashed, the readers may finish (or the download fails, if the
         * digest does not match); once written too, the end completes.
         */
        private void finishing() {
            if (!verified && hash.through() == received) {
                if (!d.digest.matches(digest.digest())) {
                    fail(null);
                    sender.countError("digest_mismatch");
                    LOG.warn("{}: blob {} failed after {} bytes: digest mismatch: the bytes do not hash to it",
                            sender.name(), d.digest, received);
                    end.tryFail(RegistryError.badGateway(sender.name(),
                            "digest mismatch: upstream bytes do not hash to " + d.digest, "digest_mismatch"));
                    return;
                }
                verified = true;
                d.verified(received);
            }
            if (verified && file.through() == received) {
                end.tryComplete();
            }
        }

        /** The file, for the commit to close: every byte is written. */
        FileChannel channel() {
            return channel;
        }

        @Override
        public void fail(Throwable cause) {
            owner.check();
            if (failed) {
                return;
            }
            failed = true;
            file.stop();
            hash.stop();
        }

        @Override
        public void onFailure(Consumer<Throwable> failed) {
            this.onFailure = failed;
        }

        /** The sink cannot go on (the disk, or no memory for a chunk): the file closes, and the pump is told. */
        private void breakDown(Throwable e) {
            owner.check();
            if (failed) {
                return;
            }
            fail(e);
            if (end != null) {
                end.tryFail(e); // every byte had arrived; the pump waits for the writes
            } else if (onFailure != null) {
                onFailure.accept(e);
            }
        }
    }

    /**
     * Creates and opens a temporary file on a worker (one hop), noting the free space. One byte is
     * written to it first: readers are sent bytes from memory before the file has them, so a disk
     * that refuses writes must be found now, while every request can still go to the upstream.
     */
    private Future<Temp> prepareTemp() {
        BlobStore store = s.store();
        return s.blocking().run(() -> {
            long free = store.usableSpace();
            Path path = store.newTempFile();
            try {
                try (FileChannel probe = FileChannel.open(path, StandardOpenOption.WRITE)) {
                    probe.write(ByteBuffer.allocate(1), 0);
                    probe.truncate(0); // an empty blob stays empty
                }
                return new Temp(path, FileChannel.open(path, StandardOpenOption.WRITE), free);
            } catch (IOException | RuntimeException e) {
                store.discard(path);
                throw e;
            }
        });
    }

    private void discard(Temp temp) {
        s.blocking().run(() -> {
            temp.file().close();
            s.store().discard(temp.path());
            return null;
        });
    }

    /** Deletes a temporary file on a worker thread. */
    private void discardLater(Path temp) {
        s.blocking().run(() -> {
            s.store().discard(temp);
            return null;
        });
    }
}
