package dev.registrymirror.cache;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.file.FileStore;
import java.nio.file.StandardOpenOption;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.List;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executor;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Stream;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The cache's folder: blobs, manifests and tags, one index of what is stored, and the upkeep that
 * keeps it within its limits.
 *
 * <p>Opening takes milliseconds whatever the size of the cache: the index is a database that
 * outlives the process ({@link CacheIndex}), and the temporary folder a crash left behind is set aside
 * by one rename. A background task then deletes that folder and, unless the last run stopped cleanly,
 * reconciles the index with the disk one fan-out folder at a time: files without a row are added,
 * rows without a file forgotten. Until it is done, lookups that the index cannot answer ask the disk,
 * and nothing is evicted. Every minute, whenever a commit takes the store over {@code maxSize}, and whenever a
 * commit or a new download finds less than {@code minFree} free on the file system, the upkeep
 * evicts what the limits say must go.
 */
public final class Storage implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(Storage.class);
    private static final long UPKEEP_SECONDS = 60;
    /** A failed start-up scan is tried again after this long. */
    private static final long SCAN_RETRY_SECONDS = 60;
    /** How often a long reconciliation logs its progress. */
    private static final long PROGRESS_NANOS = TimeUnit.SECONDS.toNanos(10);

    /**
     * @param maxBytes bytes kept at most, 0 for no limit
     * @param lowBytes what eviction brings the total down to
     * @param maxAge   unread content older than this is removed; {@code null} for no limit
     * @param minFree  free bytes to keep on the file system: below it, the least recently used content
     *                 goes until there is a tenth more than that free; 0 for none
     */
    public record Limits(long maxBytes, long lowBytes, Duration maxAge, long minFree) {
        public static final Limits NONE = new Limits(0, 0, null, 0);
    }

    /** The space left for the cache on its file system. */
    @FunctionalInterface
    public interface FreeSpace {
        /** Usable bytes now. Blocks (a system call). */
        long usable() throws IOException;
    }

    private final Path root;
    private final FileChannel folderLock;
    /** Whether the folder held no content before this start (then there is nothing to reconcile). */
    private final boolean newFolder;
    private final CacheIndex index;
    private final StorageEvents events;
    private final Executor upkeep;
    private final ScheduledExecutorService ownExecutor;
    private final FileBlobStore blobs;
    private final FileManifestStore manifests;
    private final FileTagStore tags;
    private final AtomicBoolean upkeepQueued = new AtomicBoolean();
    private final CompletableFuture<Void> indexed = new CompletableFuture<>();
    private final Object upkeepLock = new Object();
    private final List<Path> staleTemp = new ArrayList<>();
    private final long minFree;
    private final FreeSpace freeSpace;
    /** The usable space last seen, -1 before the first look. */
    private final AtomicLong lastFree = new AtomicLong(-1);
    /** Whether the last upkeep could not make {@code minFree} bytes free (logged once until it can). */
    private boolean shortOfSpace;
    private volatile boolean closed;

    private Storage(Path root, Limits limits, Clock clock, StorageEvents events, long manifestMemoryBytes,
                    int tagMemoryEntries, Executor upkeep, ScheduledExecutorService ownExecutor, FreeSpace freeSpace)
            throws IOException {
        this.root = root;
        this.events = events;
        this.upkeep = upkeep;
        this.ownExecutor = ownExecutor;
        this.minFree = limits.minFree();
        String run = HexFormat.of().toHexDigits(ThreadLocalRandom.current().nextInt());
        Files.createDirectories(root.resolve("index"));
        this.freeSpace = freeSpace != null ? freeSpace : fileSystemOf(root);
        this.folderLock = lockFolder(root);
        CacheIndex opened = null;
        try {
            setAsideTemp();
            this.newFolder = !Files.exists(root.resolve("blobs")) && !Files.exists(root.resolve("manifests"));
            opened = CacheIndex.open(root.resolve("index").resolve("index.db"), clock, limits.maxBytes(),
                    limits.lowBytes(), limits.maxAge(), events, this::requestUpkeep);
            this.index = opened;
            this.blobs = new FileBlobStore(root, index, events, this::grew, this::usableSpace);
            this.manifests = new FileManifestStore(root, manifestMemoryBytes, index, events, run, this::grew);
            this.tags = new FileTagStore(root, tagMemoryEntries, run);
        } catch (IOException | RuntimeException e) {
            if (opened != null) {
                opened.close();
            }
            unlockFolder();
            throw e;
        }
    }

    /**
     * Takes the folder for this process: an exclusive lock on {@code index/lock}, which the kernel
     * lets go of when the process ends, however it ends. A second mirror on the same folder would move
     * the first one's temporary files aside and keep an index of its own commits only.
     */
    private static FileChannel lockFolder(Path root) throws IOException {
        Path file = root.resolve("index").resolve("lock");
        FileChannel channel = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.WRITE);
        FileLock lock;
        try {
            lock = channel.tryLock();
        } catch (OverlappingFileLockException e) {
            lock = null; // this process has it already
        } catch (IOException | RuntimeException e) {
            channel.close();
            throw e;
        }
        if (lock == null) {
            channel.close();
            throw new IOException("the cache folder " + root.toAbsolutePath().normalize() + " is in use by another"
                    + " mirror process (" + file.getFileName() + " is locked); give each mirror its own storage.path");
        }
        return channel;
    }

    private void unlockFolder() {
        try {
            folderLock.close(); // releases the lock
        } catch (IOException e) {
            LOG.warn("cannot release the lock of the cache folder {}: {}", root, e.toString());
        }
    }

    private static FreeSpace fileSystemOf(Path root) throws IOException {
        FileStore store = Files.getFileStore(root);
        return store::getUsableSpace;
    }

    /**
     * Starts loading what opening the storage under {@code root} needs (the index database's native
     * library) on a thread of its own, so that it overlaps the rest of start-up. Optional: {@link #open}
     * does it otherwise, and reports any failure.
     */
    public static void preload(Path root) {
        Thread t = new Thread(() -> {
            try {
                CacheIndex.loadDriver(root.resolve("index"));
            } catch (IOException | RuntimeException e) {
                // open() tries again and reports it
            }
        }, "storage-preload");
        t.setDaemon(true);
        t.start();
    }

    /**
     * Opens (creating if needed) the storage under {@code root}, ready for lookups and commits; its
     * background work (the reconciliation, if needed, and the upkeep) runs on a thread of its own once
     * {@link #start} is called, so that it does not slow the rest of start-up.
     */
    public static Storage open(Path root, Limits limits, Clock clock, StorageEvents events, long manifestMemoryBytes,
                               int tagMemoryEntries) throws IOException {
        ScheduledExecutorService executor = Executors.newSingleThreadScheduledExecutor(r -> {
            Thread t = new Thread(r, "storage-upkeep");
            t.setDaemon(true);
            return t;
        });
        Storage s;
        try {
            s = new Storage(root, limits, clock, events, manifestMemoryBytes, tagMemoryEntries, executor, executor,
                    null);
        } catch (IOException | RuntimeException e) {
            executor.shutdownNow();
            throw e;
        }
        return s;
    }

    /**
     * Starts the background work of a storage from {@link #open(Path, Limits, Clock, StorageEvents, long, int)}:
     * the reconciliation (if the index needs one), then the upkeep every minute. Call it once.
     */
    public void start() {
        if (ownExecutor == null) {
            return; // tests run the tasks themselves
        }
        // Every task goes through guarded(): an executor would keep what a task throws in a future nobody reads.
        ownExecutor.execute(guarded("scan", this::scan));
        ownExecutor.scheduleWithFixedDelay(guarded("upkeep", this::upkeep), UPKEEP_SECONDS, UPKEEP_SECONDS,
                TimeUnit.SECONDS);
    }

    /** Like {@link #open}, with the scan and upkeep run by {@code upkeep} (tests hold them back with it). */
    static Storage open(Path root, Limits limits, Clock clock, StorageEvents events, Executor upkeep)
            throws IOException {
        return open(root, limits, clock, events, upkeep, null);
    }

    /** Like {@link #open(Path, Limits, Clock, StorageEvents, Executor)}, with the free space told by {@code freeSpace}. */
    static Storage open(Path root, Limits limits, Clock clock, StorageEvents events, Executor upkeep,
                        FreeSpace freeSpace) throws IOException {
        Storage s = new Storage(root, limits, clock, events, 1 << 20, 1000, upkeep, null, freeSpace);
        upkeep.execute(s.guarded("scan", s::scan));
        return s;
    }

    public BlobStore blobs() {
        return blobs;
    }

    public ManifestStore manifests() {
        return manifests;
    }

    public TagStore tags() {
        return tags;
    }

    /** The index (for tests, which hold its locks to order concurrent operations). */
    CacheIndex index() {
        return index;
    }

    /** Completes when the start-up scan has indexed everything on disk (a failed scan is tried again). */
    public CompletableFuture<Void> indexed() {
        return indexed;
    }

    /** A stored item as an operator sees it: its size and last use. */
    public record Item(long size, Instant lastUse) {
    }

    /** The stored blob's size and last use, without counting this as a use. Blocks. */
    public Optional<Item> blob(Digest digest) throws IOException {
        return item(new CacheIndex.Key(ContentKind.BLOB, digest));
    }

    /** The stored manifest's size and last use, without counting this as a use. Blocks. */
    public Optional<Item> manifest(Digest digest) throws IOException {
        return item(new CacheIndex.Key(ContentKind.MANIFEST, digest));
    }

    private Optional<Item> item(CacheIndex.Key key) throws IOException {
        CacheIndex.Use u = index.peek(key);
        return u == null ? Optional.empty() : Optional.of(new Item(u.size(), Instant.ofEpochMilli(u.lastUseMillis())));
    }

    /**
     * The {@code <upstream>/<repository>} names a blob or manifest was fetched for or confirmed
     * under; empty when none was recorded. Blocks.
     */
    public List<String> origins(ContentKind kind, Digest digest) throws IOException {
        return index.origins(new CacheIndex.Key(kind, digest));
    }

    /**
     * Records that a stored blob or manifest was fetched for, or confirmed under, {@code name}; false
     * (and nothing recorded) when it is not stored. Blocks.
     */
    public boolean addOrigin(ContentKind kind, Digest digest, String name) throws IOException {
        return index.addOrigin(new CacheIndex.Key(kind, digest), name);
    }

    /** A stored manifest's bytes, without counting this as a use or caching it. Blocks. */
    public Optional<ManifestStore.Manifest> readManifest(Digest digest) throws IOException {
        return manifests.peek(digest);
    }

    /**
     * Removes whatever is stored under {@code digest} (a blob, a manifest, or both) at an operator's
     * request; yields the kinds removed ({@code blob}, {@code manifest}), empty if none was stored.
     * A tag that pointed at a removed manifest fetches it again on its next pull. Blocks.
     */
    public List<String> remove(Digest digest) throws IOException {
        List<String> removed = new ArrayList<>();
        if (blobs.remove(digest)) {
            removed.add(ContentKind.BLOB.label());
        }
        if (manifests.remove(digest)) {
            removed.add(ContentKind.MANIFEST.label());
        }
        return removed;
    }

    /** How many items of a kind are stored. */
    public long storedCount(ContentKind kind) {
        return index.count(kind);
    }

    /**
     * The usable space on the cache's file system now; when it is under {@code minFree}, the upkeep
     * is asked to make room. Blocks (a system call).
     */
    long usableSpace() throws IOException {
        long usable = freeSpace.usable();
        lastFree.set(usable);
        if (usable < minFree) {
            requestUpkeep();
        }
        return usable;
    }

    /**
     * The usable space on the cache's file system now, noted for {@link #lastFreeSpace}; -1 (logged)
     * when it cannot be read, and then nothing is evicted for {@code minFree}. Blocks (a system call).
     */
    private long readFreeSpace() {
        try {
            long usable = freeSpace.usable();
            lastFree.set(usable);
            return usable;
        } catch (IOException e) {
            LOG.warn("cannot read the free space of {}: {}", root, e.toString());
            return -1;
        }
    }

    /** The usable space on the cache's file system when last looked at (each download, commit and upkeep); -1 before. */
    public long lastFreeSpace() {
        return lastFree.get();
    }

    /** Content was committed: the store may be over {@code maxSize}, or the disk short of {@code minFree}. */
    private void grew() {
        if (index.overLimit()) {
            requestUpkeep();
        } else if (minFree > 0) {
            try {
                usableSpace();
            } catch (IOException e) {
                // the next upkeep looks again
            }
        }
    }

    /** Runs the upkeep now on the calling thread: evicts what the limits say must go. Blocks. */
    public void upkeep() {
        synchronized (upkeepLock) {
            if (closed) {
                return;
            }
            try {
                long usable = readFreeSpace();
                // Below minFree: make a tenth more than that free, so that every commit does not evict again.
                long target = minFree > Long.MAX_VALUE / 2 ? Long.MAX_VALUE : minFree + minFree / 10;
                long toFree = usable >= 0 && usable < minFree ? target - usable : 0;
                long started = System.nanoTime();
                CacheIndex.Upkeep done = index.maintain(toFree);
                if (done.items() > 0) {
                    LOG.info("storage upkeep removed {} blobs and manifests ({} MiB) in {} ms; {} items, {} MiB stored",
                            done.items(), done.bytes() >> 20, (System.nanoTime() - started) / 1_000_000,
                            index.count(ContentKind.BLOB) + index.count(ContentKind.MANIFEST), index.totalBytes() >> 20);
                }
                if (toFree > 0) {
                    reportShortOfSpace(usable, toFree, done.freedForDisk());
                } else if (shortOfSpace && usable >= 0) {
                    shortOfSpace = false;
                    LOG.info("free space on the cache's file system is back over storage.minFree: {} MiB free",
                            usable >> 20);
                }
            } catch (IOException | RuntimeException e) {
                LOG.error("storage upkeep failed; it runs again within a minute: {}", e.toString(), e);
                events.failed("upkeep", e);
            }
        }
    }

    /**
     * {@code task}, reporting anything it throws: an Error goes to {@link StorageEvents#failed} (the
     * owner ends the process), and is thrown on; nothing is left for an executor to swallow.
     */
    private Runnable guarded(String name, Runnable task) {
        return () -> {
            try {
                task.run();
            } catch (Error e) {
                LOG.error("storage {} failed", name, e);
                events.failed(name, e);
                throw e;
            } catch (RuntimeException e) {
                LOG.error("storage {} failed", name, e);
                events.failed(name, e);
            }
        };
    }

    private void reportShortOfSpace(long usable, long toFree, long freed) {
        if (freed >= toFree) {
            LOG.info("free space on the cache's file system was {} MiB, under storage.minFree ({} MiB): removed {} MiB"
                    + " of least recently used content", usable >> 20, minFree >> 20, freed >> 20);
            shortOfSpace = false;
        } else if (!shortOfSpace) {
            LOG.warn("free space on the cache's file system is {} MiB, under storage.minFree ({} MiB), and removing"
                    + " what the cache could ({} MiB) was not enough: other files fill the disk, or content is in use",
                    usable >> 20, minFree >> 20, freed >> 20);
            shortOfSpace = true;
        }
    }

    private void requestUpkeep() {
        if (upkeepQueued.compareAndSet(false, true)) {
            try {
                upkeep.execute(guarded("upkeep", () -> {
                    upkeepQueued.set(false);
                    upkeep();
                }));
            } catch (java.util.concurrent.RejectedExecutionException e) {
                upkeepQueued.set(false); // closed
            }
        }
    }

    /** Moves a non-empty {@code tmp/} aside, to be deleted by the scan; the new {@code tmp/} is empty. */
    private void setAsideTemp() throws IOException {
        Path tmp = root.resolve("tmp");
        try (Stream<Path> old = Files.list(root)) {
            old.filter(p -> p.getFileName().toString().startsWith("tmp-stale-")).forEach(staleTemp::add);
        }
        if (Files.isDirectory(tmp)) {
            boolean empty;
            try (Stream<Path> in = Files.list(tmp)) {
                empty = in.findAny().isEmpty();
            }
            if (!empty) {
                Path aside = root.resolve("tmp-stale-" + System.currentTimeMillis() + "-"
                        + HexFormat.of().toHexDigits((short) ThreadLocalRandom.current().nextInt()));
                Files.move(tmp, aside);
                staleTemp.add(aside);
            }
        }
    }

    private void scan() {
        if (index.complete() || closed) {
            return; // a retry queued twice, or stopping
        }
        long started = System.nanoTime();
        try {
            long free = readFreeSpace();
            boolean fresh = newFolder && index.created(); // nothing was ever stored here
            boolean walk = !index.wasClean() && !fresh;
            String how;
            if (walk) {
                index.reconciling();
                LOG.info("reconciling the cache index with the folder {} ({}); until it is done, lookups the index"
                        + " cannot answer ask the disk, and nothing is evicted", root,
                        index.created() ? "no index yet" : "the last run did not stop cleanly");
                Progress progress = new Progress(started);
                for (StorageScan.ContentFolder folder : List.<StorageScan.ContentFolder>of(blobs, manifests)) {
                    reconcile(folder, progress);
                    if (closed) {
                        return;
                    }
                }
                tags.scan();
                how = "reconciled with the disk (" + progress.added + " files added, " + progress.forgotten
                        + " missing files forgotten)";
            } else {
                how = fresh ? "a new cache folder" : "as the last run left it";
            }
            index.reconciled();
            long millis = (System.nanoTime() - started) / 1_000_000;
            long items = index.count(ContentKind.BLOB) + index.count(ContentKind.MANIFEST);
            LOG.info("cache index ready: {} blobs, {} manifests, {} bytes, {}, in {} ms", index.count(ContentKind.BLOB),
                    index.count(ContentKind.MANIFEST), index.totalBytes(), how, millis);
            events.indexReady(items, index.totalBytes(), millis);
            indexed.complete(null);
            int leftovers = 0;
            for (Path stale : staleTemp) {
                leftovers += StorageScan.deleteTree(stale);
            }
            staleTemp.clear();
            if (leftovers > 0) {
                LOG.info("removed {} temporary files left by an earlier run", leftovers);
            }
            // From now on a blob the cache does not have is known as such without a lookup.
            index.fillPresence();
            if (index.overLimit() || (free >= 0 && free < minFree)) {
                requestUpkeep();
            }
        } catch (IOException | RuntimeException e) {
            LOG.error("cannot index the cache folder {}: {}; trying again in {} s (until then nothing is evicted)",
                    root, e.toString(), SCAN_RETRY_SECONDS);
            events.failed("scan", e);
            retryScan();
        }
    }

    /** What a reconciliation has done so far. */
    private static final class Progress {
        long added;
        long forgotten;
        long files;
        long lastLog;

        Progress(long started) {
            this.lastLog = started;
        }
    }

    /**
     * Makes the index agree with one content folder, a fan-out folder at a time: the rows under it are
     * read (a few tens of thousands at most, even with ten million items), then its files are listed;
     * files without a row are added in batches, rows without a file forgotten. Commits and lookups go on
     * meanwhile: a row inserted after the read is ignored by the insert, an item removed meanwhile is
     * left out by {@link CacheIndex#load}, and a missing file is checked again under the item's lock.
     */
    private void reconcile(StorageScan.ContentFolder folder, Progress progress) throws IOException {
        ContentKind kind = folder.kind();
        for (String algorithm : StorageScan.ALGORITHMS) {
            for (String prefix : StorageScan.prefixes()) {
                if (closed) {
                    return;
                }
                Set<Digest> rows = new HashSet<>(index.rowsUnder(kind, algorithm, prefix));
                List<CacheIndex.Scanned> found = new ArrayList<>();
                StorageScan.contentFilesIn(folder.folder(), algorithm, prefix, (digest, attrs) -> {
                    progress.files++;
                    if (!rows.remove(digest)) {
                        found.add(new CacheIndex.Scanned(new CacheIndex.Key(kind, digest), attrs.size(),
                                attrs.lastModifiedTime().toMillis()));
                        if (found.size() >= CacheIndex.LOAD_BATCH) {
                            progress.added += index.load(found);
                            found.clear();
                        }
                    }
                }, (file, attrs) -> folder.otherFile(file));
                progress.added += index.load(found);
                for (Digest d : rows) {
                    if (folder.forgetIfMissing(d)) {
                        progress.forgotten++;
                    }
                }
                long now = System.nanoTime();
                if (now - progress.lastLog >= PROGRESS_NANOS) {
                    progress.lastLog = now;
                    LOG.info("reconciling the cache index: {}s {}/{} of 256, {} files seen, {} added, {} forgotten",
                            kind.label(), algorithm, prefix, progress.files, progress.added, progress.forgotten);
                }
            }
        }
    }

    private void retryScan() {
        if (closed) {
            return;
        }
        try {
            if (ownExecutor != null) {
                ownExecutor.schedule(guarded("scan", this::scan), SCAN_RETRY_SECONDS, TimeUnit.SECONDS);
            } else {
                upkeep.execute(guarded("scan", this::scan)); // tests run it when they choose
            }
        } catch (java.util.concurrent.RejectedExecutionException e) {
            // closed meanwhile
        }
    }

    /**
     * Deletes every file in {@code tmp/}. Only for a stopping mirror, once no download is under way:
     * a clean stop leaves no temporary files. Blocks.
     */
    public void removeTemporaryFiles() throws IOException {
        try (Stream<Path> in = Files.list(root.resolve("tmp"))) {
            for (Path p : (Iterable<Path>) in::iterator) {
                Files.deleteIfExists(p);
            }
        }
    }

    /**
     * Stops the scan and the upkeep (waiting for the batch under way), then closes the index, noting
     * that it agrees with the disk if the scan had finished. Call it once nothing uses the stores.
     * Blocks: not on an event loop.
     */
    @Override
    public void close() {
        closed = true;
        index.stop();
        if (ownExecutor != null) {
            ownExecutor.shutdownNow();
            try {
                if (!ownExecutor.awaitTermination(30, TimeUnit.SECONDS)) {
                    LOG.warn("the storage upkeep did not stop within 30 s; closing its index anyway");
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        synchronized (upkeepLock) {
            index.close();
        }
        unlockFolder();
    }

    /**
     * Ends this storage as a crash would, for tests: nothing more is written, the index is not marked
     * as agreeing with the disk, and the folder is let go so that it can be opened again.
     */
    void crash() {
        closed = true;
        index.stop();
        if (ownExecutor != null) {
            ownExecutor.shutdownNow();
        }
        index.abandon();
        unlockFolder();
    }
}
