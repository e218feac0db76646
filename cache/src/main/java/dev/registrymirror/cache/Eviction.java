package dev.registrymirror.cache;

import java.io.IOException;
import java.io.InterruptedIOException;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * What goes when the store is over its limits: content unread for longer than {@code maxAge}; the
 * least recently used down to the low watermark when over {@code maxSize}; and the least recently
 * used until enough is free when the file system runs short. Pinned items are skipped ({@link Pins}).
 *
 * <p>Implementation note: it pages through the index by last use, {@value #BATCH} candidates at a
 * time; a batch's rows go in one transaction (a commit waiting for the writer waits at most one
 * batch), then its files are unlinked on {@value #UNLINK_THREADS} threads without any lock held. A
 * file that cannot be deleted gets its row back (the disk stays the truth).
 */
final class Eviction {
    private static final Logger LOG = LoggerFactory.getLogger(Eviction.class);
    /** Items removed per transaction. */
    static final int BATCH = 500;
    /** Threads that delete evicted files. */
    static final int UNLINK_THREADS = 2;

    private final CacheIndex index;
    private final ExecutorService unlinkers = Executors.newFixedThreadPool(UNLINK_THREADS, r -> {
        Thread t = new Thread(r, "cache-unlink");
        t.setDaemon(true);
        return t;
    });
    /** Items and bytes evicted since this start (written by the upkeep only). */
    private long evictedItems;
    private long evictedBytes;

    Eviction(CacheIndex index) {
        this.index = index;
    }

    /**
     * Removes unread content older than
     * {@code maxAge}; when over {@code maxSize}, the least recently used content down to the low
     * watermark; and then the least recently used content until {@code bytesToFree} bytes are gone
     * (the file system is short of space; counted with reason {@code disk}). Pinned items are skipped.
     * Blocks: run it on a worker thread.
     */
    CacheIndex.Upkeep run(long bytesToFree) throws IOException {
        long itemsBefore = evictedItems;
        long bytesBefore = evictedBytes;
        if (index.maxAgeMillis() > 0) {
            long cutoff = index.now() - index.maxAgeMillis();
            evict("age", cutoff, Long.MAX_VALUE);
        }
        if (index.overLimit()) {
            evict("size", Long.MAX_VALUE, Long.MAX_VALUE);
        }
        long freed = bytesToFree > 0 ? evict("disk", Long.MAX_VALUE, bytesToFree) : 0;
        return new CacheIndex.Upkeep(evictedItems - itemsBefore, evictedBytes - bytesBefore, freed);
    }

    /** A candidate for eviction, as the query found it. */
    private record Candidate(CacheIndex.Key key, long size, long access, byte[] digestBytes) {
    }

    /**
     * Evicts, least recently used first, items last used before {@code before}: for {@code size} until
     * the low watermark is reached, otherwise until {@code enough} bytes are gone or none is left.
     * Works in batches of {@link #BATCH}; yields the bytes removed.
     */
    private long evict(String reason, long before, long enough) throws IOException {
        boolean bySize = reason.equals("size");
        long freed = 0;
        long afterAccess = Long.MIN_VALUE;
        int afterKind = -1;
        byte[] afterDigest = new byte[0];
        while (index.running()) {
            if ((bySize && index.totalBytes() <= index.lowBytes()) || freed >= enough) {
                break;
            }
            List<Candidate> batch = new ArrayList<>(BATCH);
            long since = afterAccess;
            int sinceKind = afterKind;
            byte[] sinceDigest = afterDigest;
            try {
                index.readers().read(r -> {
                    try (PreparedStatement q = r.connection.prepareStatement(
                            "SELECT kind, digest, size, access FROM item INDEXED BY item_by_access"
                                    + " WHERE access < ? AND (access, kind, digest) > (?, ?, ?)"
                                    + " ORDER BY access, kind, digest LIMIT " + BATCH)) {
                        q.setLong(1, before);
                        q.setLong(2, since);
                        q.setInt(3, sinceKind);
                        q.setBytes(4, sinceDigest);
                        try (ResultSet rs = q.executeQuery()) {
                            while (rs.next()) {
                                byte[] d = rs.getBytes(2);
                                String alg = d.length == 32 ? "sha256" : "sha512";
                                batch.add(new Candidate(new CacheIndex.Key(ContentKind.of(rs.getInt(1)),
                                        new Digest(alg, HexFormat.of().formatHex(d))), rs.getLong(3), rs.getLong(4), d));
                            }
                        }
                    }
                    return null;
                });
            } catch (SQLException e) {
                throw index.failure("find what to evict in", e);
            }
            if (batch.isEmpty()) {
                break;
            }
            long[] done = evictBatch(reason, batch, bySize, enough - freed);
            freed += done[0];
            if (done[1] == 0) {
                break;
            }
            // The next page starts after the last candidate considered: one left because the target was
            // reached stays in line, should the store grow again meanwhile.
            Candidate last = batch.get((int) done[1] - 1);
            afterAccess = last.access();
            afterKind = last.key().kind().code;
            afterDigest = last.digestBytes();
        }
        return freed;
    }

    /**
     * Removes the unpinned candidates, stopping once the stored bytes are down to the low watermark
     * (for {@code size}) or {@code enough} bytes are removed. Their rows go in one transaction; their
     * files are unlinked after it, without any lock held. One whose file cannot be deleted gets its row
     * back (the disk stays the truth). Yields the bytes removed and how many candidates were considered.
     */
    private long[] evictBatch(String reason, List<Candidate> batch, boolean bySize, long enough) throws IOException {
        List<CacheIndex.Key> victims = new ArrayList<>();
        Pins pins = index.pins();
        try {
            long planned = 0;
            long total = index.totalBytes();
            int considered = 0;
            for (Candidate c : batch) {
                CacheIndex.Key k = c.key();
                if ((bySize && total - planned <= index.lowBytes()) || planned >= enough) {
                    break;
                }
                considered++;
                if (!pins.markUnlinking(k)) {
                    continue; // pinned
                }
                victims.add(k);
                planned += c.size();
            }
            long[] sizes = index.deleteRows(victims);
            boolean[] failed = unlink(victims, sizes);
            long freed = 0;
            List<Integer> kept = new ArrayList<>();
            for (int i = 0; i < victims.size(); i++) {
                CacheIndex.Key key = victims.get(i);
                if (sizes[i] < 0) {
                    continue; // removed meanwhile
                }
                if (failed[i]) {
                    kept.add(i);
                    continue;
                }
                index.events().evicted(key.kind().label(), reason, sizes[i]);
                freed += sizes[i];
                evictedItems++;
                evictedBytes += sizes[i];
            }
            for (int i : kept) {
                index.add(victims.get(i), sizes[i], index.now(), false);
            }
            return new long[] {freed, considered};
        } finally {
            pins.unlinked(victims);
        }
    }

    /**
     * Deletes the files of the victims whose rows were removed ({@code sizes[i] >= 0}), on
     * {@value #UNLINK_THREADS} threads: an unlink takes tens of microseconds, mostly waiting for the
     * file system, so they overlap well. Yields which could not be deleted (logged).
     */
    private boolean[] unlink(List<CacheIndex.Key> victims, long[] sizes) throws IOException {
        boolean[] failed = new boolean[victims.size()];
        int chunk = Math.max(1, (victims.size() + UNLINK_THREADS - 1) / UNLINK_THREADS);
        List<java.util.concurrent.Future<?>> parts = new ArrayList<>();
        for (int from = 0; from < victims.size(); from += chunk) {
            int start = from;
            int end = Math.min(victims.size(), from + chunk);
            parts.add(unlinkers.submit(() -> {
                for (int i = start; i < end; i++) {
                    if (sizes[i] < 0) {
                        continue; // removed meanwhile
                    }
                    CacheIndex.Key key = victims.get(i);
                    index.forgetNotes(key);
                    try {
                        index.deleteFile(key);
                    } catch (IOException | RuntimeException ex) {
                        LOG.warn("cannot delete {} {}; it stays: {}", key.kind().label(), key.digest(), ex.toString());
                        failed[i] = true;
                    }
                }
            }));
        }
        for (java.util.concurrent.Future<?> part : parts) {
            try {
                part.get();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new InterruptedIOException("interrupted while evicted files were deleted");
            } catch (java.util.concurrent.ExecutionException e) {
                if (e.getCause() instanceof Error err) {
                    throw err;
                }
                throw new IOException("cannot delete evicted files", e.getCause());
            }
        }
        return failed;
    }



    /** Stops the unlinking threads (the index is closing). */
    void close() {
        unlinkers.shutdownNow();
    }
}
