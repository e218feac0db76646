package dev.registrymirror.cache;

import dev.registrymirror.cache.CacheIndex.Kind;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.time.Clock;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executor;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.Stream;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The cache's folder: blobs, manifests and tags, one index of what is stored, and the upkeep that
 * keeps it within its limits.
 *
 * <p>Opening takes milliseconds whatever the size of the cache: the temporary folder a crash left
 * behind is set aside by one rename, and a background scan then deletes it and fills the index.
 * Until the scan is done, lookups that the index cannot answer ask the disk, and nothing is
 * evicted. Every minute, and whenever a commit takes the store over {@code maxSize}, the upkeep
 * evicts what the limits say must go.
 */
public final class Storage implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(Storage.class);
    private static final long UPKEEP_SECONDS = 60;

    /**
     * @param maxBytes bytes kept at most, 0 for no limit
     * @param lowBytes what eviction brings the total down to
     * @param maxAge   unread content older than this is removed; {@code null} for no limit
     */
    public record Limits(long maxBytes, long lowBytes, Duration maxAge) {
        public static final Limits NONE = new Limits(0, 0, null);
    }

    private final Path root;
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
    private volatile boolean closed;

    private Storage(Path root, Limits limits, Clock clock, StorageEvents events, long manifestMemoryBytes,
                    int tagMemoryEntries, Executor upkeep, ScheduledExecutorService ownExecutor) throws IOException {
        this.root = root;
        this.events = events;
        this.upkeep = upkeep;
        this.ownExecutor = ownExecutor;
        this.index = new CacheIndex(clock, limits.maxBytes(), limits.lowBytes(), limits.maxAge(), events);
        String run = HexFormat.of().toHexDigits(ThreadLocalRandom.current().nextInt());
        Files.createDirectories(root);
        setAsideTemp();
        this.blobs = new FileBlobStore(root, index, events, this::requestUpkeep);
        this.manifests = new FileManifestStore(root, manifestMemoryBytes, index, events, run, this::requestUpkeep);
        this.tags = new FileTagStore(root, tagMemoryEntries, run);
    }

    /**
     * Opens (creating if needed) the storage under {@code root} and starts its background scan and
     * upkeep on a thread of its own.
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
            s = new Storage(root, limits, clock, events, manifestMemoryBytes, tagMemoryEntries, executor, executor);
        } catch (IOException | RuntimeException e) {
            executor.shutdownNow();
            throw e;
        }
        executor.execute(s::scan);
        executor.scheduleWithFixedDelay(s::upkeep, UPKEEP_SECONDS, UPKEEP_SECONDS, TimeUnit.SECONDS);
        return s;
    }

    /** Like {@link #open}, with the scan and upkeep run by {@code upkeep} (tests hold them back with it). */
    static Storage open(Path root, Limits limits, Clock clock, StorageEvents events, Executor upkeep)
            throws IOException {
        Storage s = new Storage(root, limits, clock, events, 1 << 20, 1000, upkeep, null);
        upkeep.execute(s::scan);
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

    /** Completes when the start-up scan has indexed everything on disk. */
    public CompletableFuture<Void> indexed() {
        return indexed;
    }

    /** How many items of a kind ({@code blob}, {@code manifest}) are stored. */
    public long storedCount(String kind) {
        return index.count(kind.equals("blob") ? Kind.BLOB : Kind.MANIFEST);
    }

    /** Runs the upkeep now on the calling thread: evicts what the limits say must go. Blocks. */
    public void upkeep() {
        synchronized (upkeepLock) {
            if (closed) {
                return;
            }
            try {
                for (Map.Entry<CacheIndex.Key, Long> touched : index.maintain()) {
                    persistAccess(touched.getKey(), touched.getValue());
                }
            } catch (RuntimeException e) {
                LOG.error("storage upkeep failed", e);
            }
        }
    }

    private void requestUpkeep() {
        if (upkeepQueued.compareAndSet(false, true)) {
            try {
                upkeep.execute(() -> {
                    upkeepQueued.set(false);
                    upkeep();
                });
            } catch (java.util.concurrent.RejectedExecutionException e) {
                upkeepQueued.set(false); // closed
            }
        }
    }

    private void persistAccess(CacheIndex.Key key, long millis) {
        Path p = key.kind() == Kind.BLOB ? blobs.pathOf(key.digest()) : manifests.pathOf(key.digest());
        try {
            Files.setLastModifiedTime(p, FileTime.fromMillis(millis));
        } catch (IOException e) {
            // evicted meanwhile, or read-only: the next start sees an older last use
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
        long started = System.nanoTime();
        try {
            int leftovers = 0;
            for (Path stale : staleTemp) {
                leftovers += StorageScan.deleteTree(stale);
            }
            if (leftovers > 0) {
                LOG.info("removed {} temporary files left by an earlier run", leftovers);
            }
            List<CacheIndex.Scanned> found = new ArrayList<>();
            blobs.scan(found);
            manifests.scan(found);
            tags.scan();
            index.loaded(found);
            long millis = (System.nanoTime() - started) / 1_000_000;
            long items = index.count(Kind.BLOB) + index.count(Kind.MANIFEST);
            LOG.info("cache index ready: {} blobs, {} manifests, {} bytes, scanned in {} ms", index.count(Kind.BLOB),
                    index.count(Kind.MANIFEST), index.totalBytes(), millis);
            events.indexReady(items, index.totalBytes(), millis);
            indexed.complete(null);
            if (index.overLimit()) {
                requestUpkeep();
            }
        } catch (IOException | RuntimeException e) {
            LOG.error("cannot scan the cache folder {}: {}; nothing will be evicted until a restart", root, e.toString());
            indexed.completeExceptionally(e);
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

    /** Stops the upkeep thread. */
    @Override
    public void close() {
        synchronized (upkeepLock) {
            closed = true;
        }
        if (ownExecutor != null) {
            ownExecutor.shutdownNow();
        }
    }
}
