package dev.registrymirror.cache;

import java.io.IOException;
import java.time.Clock;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.EnumMap;
import java.util.HashSet;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Every committed blob and manifest with its size and last use, least recently used first. It
 * decides what goes when the store is over {@code maxSize} (down to the low watermark) or content
 * is older than {@code maxAge}.
 *
 * <p>Implementation note: one monitor guards the map, and the stores make a file appear ({@link #add}
 * after linking it) while holding it. Eviction takes its victims out of the map under the monitor
 * (a pinned entry is never one, so a reader that {@link #pin pinned} an entry holds a file eviction
 * will not delete) and unlinks their files after letting go of it (the {@link Deleter}s): unlinking
 * a large file takes tens of milliseconds, which lookups must not wait for. While a file is being
 * unlinked its key is marked, and a store about to make that key's file appear again waits for the
 * unlink first ({@link #awaitUnlinked}), so eviction never deletes a file a concurrent commit has
 * just announced. Reads on an event loop never wait for the monitor: they go through
 * {@link #accessed}, a lock-free note applied at the next maintenance.
 */
final class CacheIndex {
    private static final Logger LOG = LoggerFactory.getLogger(CacheIndex.class);
    /** Files deleted per hold of the monitor, so readers wait at most a few milliseconds. */
    private static final int BATCH = 64;
    /** An access is written to the file's modification time at most this often. */
    static final long PERSIST_ACCESS_MILLIS = 60_000;

    enum Kind {
        BLOB("blob"), MANIFEST("manifest");

        final String label;

        Kind(String label) {
            this.label = label;
        }
    }

    record Key(Kind kind, Digest digest) {
    }

    /** Deletes the files of one kind of content. Called without the index's monitor. */
    interface Deleter {
        void delete(Digest digest) throws IOException;
    }

    /** One stored item. Sizes never change; access times and the verified flag do. */
    static final class Entry {
        final long size;
        long lastAccess;
        /** The last use written to the file. */
        volatile long persistedAccess;
        final AtomicInteger pins = new AtomicInteger();
        volatile boolean verified;

        Entry(long size, long lastAccess, long persistedAccess, boolean verified) {
            this.size = size;
            this.lastAccess = lastAccess;
            this.persistedAccess = persistedAccess;
            this.verified = verified;
        }
    }

    /** What the start-up scan found on disk. */
    record Scanned(Key key, long size, long modifiedMillis) {
    }

    private final Clock clock;
    private final long maxBytes;
    private final long lowBytes;
    private final long maxAgeMillis;
    private final StorageEvents events;
    private final Map<Kind, Deleter> deleters = new EnumMap<>(Kind.class);
    private final Map<Kind, AtomicLong> bytes = new EnumMap<>(Kind.class);
    private final Map<Kind, AtomicLong> counts = new EnumMap<>(Kind.class);
    private final ConcurrentHashMap<Key, Long> recent = new ConcurrentHashMap<>();
    private LinkedHashMap<Key, Entry> lru = new LinkedHashMap<>(1024, 0.75f, true);
    private Set<Key> removedWhileLoading = new HashSet<>();
    private volatile boolean complete;
    /** The keys of {@link #lru}, readable without the monitor (changed only under it). */
    private final Set<Key> present = ConcurrentHashMap.newKeySet();
    /** Keys whose files eviction is unlinking now (guarded by the monitor). */
    private final Set<Key> unlinking = new HashSet<>();

    /**
     * @param maxBytes     the most bytes kept, 0 for no limit
     * @param lowBytes     what eviction brings the total down to
     * @param maxAge       unread content older than this goes; {@code null} for no limit
     */
    CacheIndex(Clock clock, long maxBytes, long lowBytes, Duration maxAge, StorageEvents events) {
        this.clock = clock;
        this.maxBytes = maxBytes > 0 ? maxBytes : Long.MAX_VALUE;
        this.lowBytes = maxBytes > 0 ? Math.min(lowBytes, maxBytes) : Long.MAX_VALUE;
        this.maxAgeMillis = maxAge == null ? 0 : maxAge.toMillis();
        this.events = events;
        for (Kind k : Kind.values()) {
            bytes.put(k, new AtomicLong());
            counts.put(k, new AtomicLong());
        }
    }

    void deleter(Kind kind, Deleter deleter) {
        deleters.put(kind, deleter);
    }

    long now() {
        return clock.millis();
    }

    /**
     * Whether the item is certainly not stored: the start-up scan is complete and it is not indexed.
     * Never blocks: safe on an event loop. (It may be added a moment later; so may it after any lookup.)
     */
    boolean knownAbsent(Key key) {
        return complete && !present.contains(key);
    }

    /** Whether the item is indexed, answered without the monitor: safe on an event loop. */
    boolean knownPresent(Key key) {
        return present.contains(key);
    }

    /** Whether the start-up scan has finished; before that, absent entries may still be on disk. */
    boolean complete() {
        return complete;
    }

    /** The entry, marked as used now; {@code null} when not indexed. */
    synchronized Entry lookup(Key key) {
        Entry e = lru.get(key);
        if (e != null) {
            e.lastAccess = Math.max(e.lastAccess, now());
        }
        return e;
    }

    /** Like {@link #lookup}, and eviction leaves the entry alone until {@link #unpin}. */
    synchronized Entry pin(Key key) {
        Entry e = lookup(key);
        if (e != null) {
            e.pins.incrementAndGet();
        }
        return e;
    }

    /** Ends a {@link #pin}. Never blocks: safe on an event loop. */
    void unpin(Entry e) {
        e.pins.decrementAndGet();
    }

    /**
     * Notes a use without taking the monitor (safe on an event loop). The next upkeep applies it,
     * and writes it to the file's modification time at most once per {@link #PERSIST_ACCESS_MILLIS}.
     */
    void accessed(Key key) {
        recent.put(key, now());
    }

    /**
     * Whether a use of the entry at {@code now} should be written to its file now; if so, it counts as
     * written. For readers that take the monitor ({@link #lookup}) and write the time themselves.
     */
    synchronized boolean shouldPersist(Entry e, long now) {
        if (now - e.persistedAccess < PERSIST_ACCESS_MILLIS) {
            return false;
        }
        e.persistedAccess = now;
        return true;
    }

    /**
     * Waits until eviction has unlinked the file of {@code key}, if it is doing so: call it with the
     * monitor held, before making that key's file appear. Blocks (a worker thread).
     */
    synchronized void awaitUnlinked(Key key) throws java.io.InterruptedIOException {
        while (unlinking.contains(key)) {
            try {
                wait();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new java.io.InterruptedIOException("interrupted while " + key + " was being evicted");
            }
        }
    }

    /** Adds an item whose file now exists (the caller holds the monitor while making it exist). */
    synchronized Entry add(Key key, long size, long accessMillis, boolean verified) {
        Entry e = lru.get(key);
        if (e != null) {
            return e;
        }
        e = new Entry(size, accessMillis, accessMillis, verified);
        lru.put(key, e);
        present.add(key);
        account(key.kind(), size, 1);
        if (removedWhileLoading != null) {
            removedWhileLoading.remove(key);
        }
        return e;
    }

    /** Forgets an item whose file is gone or was dropped. */
    synchronized void remove(Key key) {
        Entry e = lru.remove(key);
        present.remove(key);
        if (e != null) {
            account(key.kind(), -e.size, -1);
        }
        if (removedWhileLoading != null) {
            removedWhileLoading.add(key);
        }
    }

    /**
     * Merges what the start-up scan found: older than anything used since start, in order of
     * modification time (the last recorded use). Items removed meanwhile stay out.
     */
    synchronized void loaded(List<Scanned> scanned) {
        scanned.sort(Comparator.comparingLong(Scanned::modifiedMillis));
        LinkedHashMap<Key, Entry> merged = new LinkedHashMap<>(Math.max(1024, (scanned.size() + lru.size()) * 2),
                0.75f, true);
        for (Scanned s : scanned) {
            if (!lru.containsKey(s.key()) && !removedWhileLoading.contains(s.key())
                    && !merged.containsKey(s.key())) {
                merged.put(s.key(), new Entry(s.size(), s.modifiedMillis(), s.modifiedMillis(), false));
                present.add(s.key());
                account(s.key().kind(), s.size(), 1);
            }
        }
        for (Map.Entry<Key, Entry> e : lru.entrySet()) {
            merged.put(e.getKey(), e.getValue());
        }
        lru = merged;
        removedWhileLoading = null;
        complete = true;
    }

    long bytes(Kind kind) {
        return bytes.get(kind).get();
    }

    long count(Kind kind) {
        return counts.get(kind).get();
    }

    long totalBytes() {
        long total = 0;
        for (AtomicLong b : bytes.values()) {
            total += b.get();
        }
        return total;
    }

    /** Whether the stored bytes are over the limit, so {@link #maintain} has work to do. */
    boolean overLimit() {
        return totalBytes() > maxBytes;
    }

    /**
     * Applies the uses noted by {@link #accessed}, then removes unread content older than
     * {@code maxAge}; when over {@code maxSize}, the least recently used content down to the low
     * watermark; and then the least recently used content until {@code bytesToFree} bytes are gone
     * (the file system is short of space; counted with reason {@code disk}). Pinned entries are
     * skipped. Does nothing before the start-up scan finished. Blocks: run it on a worker thread.
     *
     * @return the entries whose access time should now be written to their files, and the bytes
     *         removed for {@code bytesToFree}
     */
    Upkeep maintain(long bytesToFree) {
        if (!complete) {
            return new Upkeep(List.of(), 0);
        }
        List<Map.Entry<Key, Long>> toPersist = new ArrayList<>();
        List<Map.Entry<Key, Long>> noted = new ArrayList<>(recent.entrySet().size());
        for (Map.Entry<Key, Long> r : recent.entrySet()) {
            Map.Entry<Key, Long> note = Map.entry(r.getKey(), r.getValue());
            recent.remove(note.getKey(), note.getValue()); // a newer note stays for the next upkeep
            noted.add(note);
        }
        // Applied in the order of use, so that what was used least recently stays first.
        noted.sort(Map.Entry.comparingByValue());
        synchronized (this) {
            for (Map.Entry<Key, Long> r : noted) {
                Entry e = lru.get(r.getKey());
                if (e != null) {
                    e.lastAccess = Math.max(e.lastAccess, r.getValue());
                    if (shouldPersist(e, e.lastAccess)) {
                        toPersist.add(Map.entry(r.getKey(), e.lastAccess));
                    }
                }
            }
        }
        if (maxAgeMillis > 0) {
            long cutoff = now() - maxAgeMillis;
            while (evictBatch("age", e -> e.lastAccess < cutoff).items() > 0) {
                // next batch
            }
        }
        if (overLimit()) {
            while (totalBytes() > lowBytes && evictBatch("size", e -> true).items() > 0) {
                // next batch
            }
        }
        long freed = 0;
        while (freed < bytesToFree) {
            Evicted batch = evictBatch("disk", e -> true, bytesToFree - freed);
            if (batch.items() == 0) {
                break;
            }
            freed += batch.bytes();
        }
        return new Upkeep(toPersist, freed);
    }

    /** What {@link #maintain} did: uses to write to files, and the bytes removed for the disk's sake. */
    record Upkeep(List<Map.Entry<Key, Long>> toPersist, long freedForDisk) {
    }

    private interface Victim {
        boolean test(Entry e);
    }

    /** What one {@link #evictBatch} removed. */
    private record Evicted(int items, long bytes) {
    }

    private Evicted evictBatch(String reason, Victim victim) {
        return evictBatch(reason, victim, Long.MAX_VALUE);
    }

    /**
     * Removes up to {@link #BATCH} unpinned entries that {@code victim} selects, eldest first, stopping
     * once the stored bytes are down to the low watermark (for {@code size}) or {@code enough} bytes
     * are removed. They leave the index under the monitor; their files are unlinked after it is let
     * go. One whose file cannot be deleted comes back into the index (the disk stays the truth).
     */
    private Evicted evictBatch(String reason, Victim victim, long enough) {
        List<Map.Entry<Key, Entry>> victims = new ArrayList<>();
        synchronized (this) {
            long selected = 0;
            boolean bySize = reason.equals("size");
            for (Iterator<Map.Entry<Key, Entry>> it = lru.entrySet().iterator(); it.hasNext() && victims.size() < BATCH; ) {
                if ((bySize && totalBytes() <= lowBytes) || selected >= enough) {
                    break;
                }
                Map.Entry<Key, Entry> me = it.next();
                Entry e = me.getValue();
                if (e.pins.get() > 0 || !victim.test(e)) {
                    continue;
                }
                it.remove();
                present.remove(me.getKey());
                account(me.getKey().kind(), -e.size, -1);
                unlinking.add(me.getKey());
                victims.add(me);
                selected += e.size;
            }
        }
        int removed = 0;
        long freed = 0;
        List<Map.Entry<Key, Entry>> kept = new ArrayList<>();
        try {
            for (Map.Entry<Key, Entry> v : victims) {
                Key key = v.getKey();
                try {
                    deleters.get(key.kind()).delete(key.digest());
                } catch (IOException ex) {
                    LOG.warn("cannot delete {} {}: {}", key.kind().label, key.digest(), ex.toString());
                    kept.add(v);
                    continue;
                }
                events.evicted(key.kind().label, reason, v.getValue().size);
                removed++;
                freed += v.getValue().size;
            }
        } finally {
            synchronized (this) {
                for (Map.Entry<Key, Entry> v : kept) {
                    if (!lru.containsKey(v.getKey())) {
                        lru.put(v.getKey(), v.getValue());
                        present.add(v.getKey());
                        account(v.getKey().kind(), v.getValue().size, 1);
                    }
                }
                for (Map.Entry<Key, Entry> v : victims) {
                    unlinking.remove(v.getKey());
                }
                notifyAll(); // stores waiting in awaitUnlinked
            }
        }
        return new Evicted(removed, freed);
    }

    private void account(Kind kind, long size, int count) {
        bytes.get(kind).addAndGet(size);
        counts.get(kind).addAndGet(count);
    }
}
