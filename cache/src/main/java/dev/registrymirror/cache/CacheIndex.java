package dev.registrymirror.cache;

import com.github.benmanes.caffeine.cache.Cache;
import com.github.benmanes.caffeine.cache.Caffeine;
import java.io.IOException;
import java.io.InterruptedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.Clock;
import java.time.Duration;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.ReentrantLock;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.sqlite.SQLiteConfig;
import org.sqlite.SQLiteErrorCode;

/**
 * Every committed blob and manifest with its size and last use, in an SQLite database
 * ({@code index/index.db} under the cache's root). It decides what goes when the store is over
 * {@code maxSize} (down to the low watermark) or content is older than {@code maxAge}.
 *
 * <p>Why a database, and this one: the index must hold millions of items in bounded memory and
 * survive restarts, so that a start does not walk the whole disk again. A Java object per item costs
 * 250 bytes or more of heap; a hand-written table of primitive arrays would cost 30 to 45 bytes per
 * item (10 million items would not fit a 512 MiB heap beside the rest), and would need a hand-written
 * snapshot and journal to restart quickly and to survive a crash. SQLite (through xerial's driver,
 * which bundles the native library) keeps the index on disk with transactions, uses no heap per item
 * (its page caches are native and bounded), opens in milliseconds whatever the size, and will also
 * hold what the mirror later records about its content. Measured on the machine of the README: a
 * lookup by digest takes about 10 µs, a commit's insert under 0.2 ms, eviction tens of thousands of
 * items per second. None of it runs on an event loop: lookups happen on worker threads.
 *
 * <p>Implementation notes.
 * <ul>
 * <li>Rows change only through this class; the totals it reports ({@link #count}, {@link #bytes}) are
 *     kept by triggers in the database and mirrored here, so they are exact and a restart reads them in
 *     one query.
 * <li>The disk stays the truth. A store inserts an item's row <em>before</em> its file appears (under
 *     the item's {@link #lockFor stripe lock}), so a crash between the two leaves a row whose file is
 *     missing, which a lookup forgets; never a file the index lacks. Eviction deletes the row before the
 *     file. After a stop that was not clean, and on a first start, a {@link Storage} reconciliation
 *     walks the folders and makes rows and files agree; until it is done, lookups that find no row ask
 *     the disk, and nothing is evicted.
 * <li>One connection writes, under a lock; readers take a connection of their own from a pool
 *     (SQLite's write-ahead log lets them read while a write is under way, so a lookup never waits for
 *     eviction). Uses are noted in memory ({@link #accessed}) and written in batches by the upkeep.
 * <li>A reader that {@link #pin pins} an item keeps eviction off its file until {@link #unpin}. Pins
 *     and the set of items being unlinked are in memory: a pin notes itself, then checks the item is not
 *     being unlinked; eviction notes the unlink, then checks for pins; so one of them sees the other.
 * </ul>
 */
final class CacheIndex implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(CacheIndex.class);
    private static final int SCHEMA = 1;
    /** Items removed per transaction: a commit waiting for the writer waits at most one batch. */
    private static final int EVICT_BATCH = 500;
    /** Rows inserted per transaction by a reconciliation. */
    static final int LOAD_BATCH = 2000;
    /** Noted uses past which the upkeep is asked to write them at once. */
    private static final int NOTES_FLUSH_AT = 50_000;
    /** Connections for lookups; a lookup takes about 10 µs, so a few serve every worker thread. */
    private static final int READERS = 8;
    /** Threads that delete evicted files. */
    private static final int UNLINK_THREADS = 2;
    /** How many recent commits {@link #knownPresent} remembers. */
    private static final int RECENT_COMMITS = 10_000;

    record Key(ContentKind kind, Digest digest) {
    }

    /** Deletes the files of one kind of content. Called without any lock of the index held. */
    interface Deleter {
        void delete(Digest digest) throws IOException;
    }

    /** A stored item, as a lookup found it. */
    record Entry(long size, boolean verified) {
    }

    /** A file a reconciliation found. */
    record Scanned(Key key, long size, long modifiedMillis) {
    }

    /** What {@link #maintain} did: the items and bytes it removed, those of them for the disk's sake. */
    record Upkeep(long items, long bytes, long freedForDisk) {
    }

    private final Path file;
    private final Clock clock;
    private final long maxBytes;
    private final long lowBytes;
    private final long maxAgeMillis;
    private final StorageEvents events;
    private final Runnable manyNotes;
    private final Map<ContentKind, Deleter> deleters = new EnumMap<>(ContentKind.class);
    private final Map<ContentKind, AtomicLong> bytes = new EnumMap<>(ContentKind.class);
    private final Map<ContentKind, AtomicLong> counts = new EnumMap<>(ContentKind.class);
    private final ConcurrentHashMap<Key, Long> recent = new ConcurrentHashMap<>();
    private final ConcurrentHashMap<Key, Integer> pins = new ConcurrentHashMap<>();
    /** Keys whose files eviction is unlinking now; waited on (its monitor) by commits of those keys. */
    private final Set<Key> unlinking = ConcurrentHashMap.newKeySet();
    private final Cache<Key, Boolean> recentCommits = Caffeine.newBuilder().maximumSize(RECENT_COMMITS).build();
    private final Object[] stripes = new Object[256];
    private final ReentrantLock writeLock = new ReentrantLock();
    private final java.util.concurrent.ExecutorService unlinkers = java.util.concurrent.Executors.newFixedThreadPool(
            UNLINK_THREADS, r -> {
                Thread t = new Thread(r, "cache-unlink");
                t.setDaemon(true);
                return t;
            });
    private final Connection writer;
    /** The writer's statements, prepared once; used with the write lock held. */
    private final PreparedStatement insertItem;
    private final PreparedStatement markVerified;
    private final PreparedStatement deleteItem;
    private final PreparedStatement touchItem;
    /** Connections for lookups, all opened at the start: a fixed number of descriptors and page caches. */
    private final LinkedBlockingQueue<Reader> readers = new LinkedBlockingQueue<>();
    private final List<Reader> allReaders = new ArrayList<>();
    /** This start's number: an item verified since this start carries it. */
    private final long run;
    /** Whether the database was created by this start (nothing was indexed before). */
    private final boolean created;
    /** Whether the previous run closed the index cleanly, so its rows and the files agree. */
    private final boolean wasClean;
    private volatile boolean complete;
    /** Keys removed while a reconciliation runs; it leaves them out (guarded by {@link #loadLock}). */
    private Set<Key> removedWhileLoading = new java.util.HashSet<>();
    private final Object loadLock = new Object();
    private volatile boolean closed;
    /** Set by {@link #stop}: eviction ends after its batch. */
    private volatile boolean stopping;
    /** Items and bytes evicted since this start (written by the upkeep only). */
    private long evictedItems;
    private long evictedBytes;

    private CacheIndex(Path file, Clock clock, long maxBytes, long lowBytes, Duration maxAge, StorageEvents events,
                       Runnable manyNotes, Connection writer, boolean created) throws SQLException {
        this.file = file;
        this.clock = clock;
        this.maxBytes = maxBytes > 0 ? maxBytes : Long.MAX_VALUE;
        this.lowBytes = maxBytes > 0 ? Math.min(lowBytes, maxBytes) : Long.MAX_VALUE;
        this.maxAgeMillis = maxAge == null ? 0 : maxAge.toMillis();
        this.events = events;
        this.manyNotes = manyNotes;
        this.writer = writer;
        this.created = created;
        this.insertItem = writer.prepareStatement(
                "INSERT OR IGNORE INTO item(kind, digest, size, access, verified) VALUES(?, ?, ?, ?, ?)");
        this.markVerified = writer.prepareStatement("UPDATE item SET verified = ? WHERE kind = ? AND digest = ?");
        this.deleteItem = writer.prepareStatement("DELETE FROM item WHERE kind = ? AND digest = ? RETURNING size");
        this.touchItem = writer.prepareStatement(
                "UPDATE item SET access = ? WHERE kind = ? AND digest = ? AND access < ?");
        for (int i = 0; i < stripes.length; i++) {
            stripes[i] = new Object();
        }
        for (ContentKind k : ContentKind.values()) {
            bytes.put(k, new AtomicLong());
            counts.put(k, new AtomicLong());
        }
        try (Statement s = writer.createStatement()) {
            s.executeUpdate("UPDATE meta SET value = value + 1 WHERE key = 'run'");
            long r = 0;
            boolean clean = false;
            try (ResultSet rs = s.executeQuery("SELECT key, value FROM meta")) {
                while (rs.next()) {
                    switch (rs.getString(1)) {
                        case "run" -> r = rs.getLong(2);
                        case "clean" -> clean = rs.getLong(2) == 1;
                        default -> { }
                    }
                }
            }
            this.run = r;
            this.wasClean = clean && !created;
            s.executeUpdate("UPDATE meta SET value = 0 WHERE key = 'clean'"); // until close() says otherwise
            for (int i = 0; i < READERS; i++) {
                Reader reader = new Reader(connect(file, 2 << 10));
                allReaders.add(reader);
                readers.add(reader);
            }
            try (ResultSet rs = s.executeQuery("SELECT kind, items, bytes FROM totals")) {
                while (rs.next()) {
                    ContentKind k = ContentKind.of(rs.getInt(1));
                    counts.get(k).set(rs.getLong(2));
                    bytes.get(k).set(rs.getLong(3));
                }
            }
        } catch (SQLException | RuntimeException e) {
            closeReaders(); // the writer is closed by openOnce
            throw e;
        }
        writer.setAutoCommit(true);
    }

    /**
     * Opens the index in {@code file}, creating it if it does not exist. A file that is not a readable
     * index of this version is set aside (logged) and a new one is made: the disk is the truth, and the
     * reconciliation indexes it again.
     *
     * @param manyNotes called (from any thread, quickly) when so many uses are noted that the upkeep
     *                  should write them now
     */
    static CacheIndex open(Path file, Clock clock, long maxBytes, long lowBytes, Duration maxAge, StorageEvents events,
                           Runnable manyNotes) throws IOException {
        loadDriver(file.getParent());
        try {
            return openOnce(file, clock, maxBytes, lowBytes, maxAge, events, manyNotes);
        } catch (SQLException e) {
            if (!unreadable(e)) {
                throw new IOException("cannot open the cache index " + file + ": " + e.getMessage(), e);
            }
            Path aside = file.resolveSibling(file.getFileName() + ".unreadable-" + System.currentTimeMillis());
            LOG.warn("the cache index {} cannot be read ({}); set aside as {}, the cache folder is indexed again",
                    file, e.getMessage(), aside.getFileName());
            Files.move(file, aside);
            Files.deleteIfExists(file.resolveSibling(file.getFileName() + "-wal"));
            Files.deleteIfExists(file.resolveSibling(file.getFileName() + "-shm"));
            try {
                return openOnce(file, clock, maxBytes, lowBytes, maxAge, events, manyNotes);
            } catch (SQLException again) {
                throw new IOException("cannot create the cache index " + file + ": " + again.getMessage(), again);
            }
        }
    }

    /**
     * Loads SQLite's native library (about a quarter of a second: unpacked from the jar, then loaded),
     * unpacking it into {@code folder} (the index's): not into a /tmp that may be read-only or mounted
     * noexec in a container. Safe to call from several threads; the first call does the work.
     */
    static void loadDriver(Path folder) throws IOException {
        Files.createDirectories(folder);
        synchronized (CacheIndex.class) {
            if (System.getProperty("org.sqlite.tmpdir") == null) {
                System.setProperty("org.sqlite.tmpdir", folder.toString());
                removeUnpackedLibraries(folder);
            }
        }
        try {
            org.sqlite.SQLiteJDBCLoader.initialize();
        } catch (Exception e) {
            String dir = System.getProperty("org.sqlite.tmpdir");
            throw new IOException("cannot load SQLite's native library, unpacked into " + dir + " (a file system mounted"
                    + " noexec? start java with -Dorg.sqlite.tmpdir=<a folder that allows executing files>): " + e, e);
        }
    }

    /**
     * Deletes the copies of the native library that processes killed before their exit left in
     * {@code folder} (the driver deletes its copy at a normal exit only): about 1 MiB per crash. One
     * still mapped by a running process stays mapped; Linux frees it when that process ends.
     */
    private static void removeUnpackedLibraries(Path folder) {
        try (java.util.stream.Stream<Path> files = Files.list(folder)) {
            for (Path p : (Iterable<Path>) files::iterator) {
                String name = p.getFileName().toString();
                if (name.startsWith("sqlite-") && (name.endsWith("libsqlitejdbc.so") || name.endsWith("libsqlitejdbc.so.lck")
                        || name.endsWith("sqlitejdbc.dll") || name.endsWith("libsqlitejdbc.dylib"))) {
                    Files.deleteIfExists(p);
                }
            }
        } catch (IOException e) {
            LOG.debug("cannot clean {} of old copies of SQLite's library: {}", folder, e.toString());
        }
    }

    private static boolean unreadable(SQLException e) {
        if (e instanceof org.sqlite.SQLiteException se) {
            SQLiteErrorCode c = se.getResultCode();
            return c == SQLiteErrorCode.SQLITE_CORRUPT || c == SQLiteErrorCode.SQLITE_NOTADB
                    || c == SQLiteErrorCode.SQLITE_SCHEMA;
        }
        return e instanceof WrongSchema;
    }

    /** The index was written by another version of the mirror. */
    private static final class WrongSchema extends SQLException {
        WrongSchema(long found) {
            super("schema version " + found + ", this version reads " + SCHEMA);
        }
    }

    private static CacheIndex openOnce(Path file, Clock clock, long maxBytes, long lowBytes, Duration maxAge,
                                       StorageEvents events, Runnable manyNotes) throws SQLException {
        boolean created = !Files.exists(file);
        Connection c = connect(file, 32 << 10);
        try {
            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                s.executeUpdate("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL)");
                s.executeUpdate("INSERT OR IGNORE INTO meta VALUES('schema', " + SCHEMA + "), ('run', 0), ('clean', 0)");
                try (ResultSet rs = s.executeQuery("SELECT value FROM meta WHERE key = 'schema'")) {
                    long found = rs.next() ? rs.getLong(1) : -1;
                    if (found != SCHEMA) {
                        throw new WrongSchema(found);
                    }
                }
                // kind: 0 blob, 1 manifest; digest: the hash's bytes (32 for sha256, 64 for sha512);
                // access: the last use, epoch milliseconds; verified: the run that last hashed it.
                s.executeUpdate("CREATE TABLE IF NOT EXISTS item(kind INTEGER NOT NULL, digest BLOB NOT NULL,"
                        + " size INTEGER NOT NULL, access INTEGER NOT NULL, verified INTEGER NOT NULL,"
                        + " PRIMARY KEY(kind, digest)) WITHOUT ROWID");
                s.executeUpdate("CREATE TABLE IF NOT EXISTS totals(kind INTEGER PRIMARY KEY, items INTEGER NOT NULL,"
                        + " bytes INTEGER NOT NULL)");
                s.executeUpdate("INSERT OR IGNORE INTO totals VALUES(0, 0, 0), (1, 0, 0)");
                s.executeUpdate("CREATE TRIGGER IF NOT EXISTS item_added AFTER INSERT ON item BEGIN"
                        + " UPDATE totals SET items = items + 1, bytes = bytes + NEW.size WHERE kind = NEW.kind; END");
                s.executeUpdate("CREATE TRIGGER IF NOT EXISTS item_removed AFTER DELETE ON item BEGIN"
                        + " UPDATE totals SET items = items - 1, bytes = bytes - OLD.size WHERE kind = OLD.kind; END");
                // origin: the <upstream>/<repository> names each item was fetched for or confirmed under
                // (access rules serve content fetched for a protected repository only to its clients).
                // Added by this version; older ones ignore the table, and rows go with their item.
                s.executeUpdate("CREATE TABLE IF NOT EXISTS origin(kind INTEGER NOT NULL, digest BLOB NOT NULL,"
                        + " repo TEXT NOT NULL, PRIMARY KEY(kind, digest, repo)) WITHOUT ROWID");
                s.executeUpdate("CREATE TRIGGER IF NOT EXISTS item_origin_removed AFTER DELETE ON item BEGIN"
                        + " DELETE FROM origin WHERE kind = OLD.kind AND digest = OLD.digest; END");
                // The index by last use is made once the first reconciliation has filled the table.
            }
            c.commit();
            return new CacheIndex(file, clock, maxBytes, lowBytes, maxAge, events, manyNotes, c, created);
        } catch (SQLException | RuntimeException e) {
            c.close();
            throw e;
        }
    }

    private static Connection connect(Path file, int cacheKib) throws SQLException {
        SQLiteConfig config = new SQLiteConfig();
        config.setJournalMode(SQLiteConfig.JournalMode.WAL);
        // With the write-ahead log, NORMAL loses no committed transaction when the process dies; a power
        // cut may lose the last ones, and the reconciliation after that start puts them right.
        config.setSynchronous(SQLiteConfig.SynchronousMode.NORMAL);
        config.setBusyTimeout(30_000);
        config.setCacheSize(-cacheKib);
        // Sorts too large for the page cache (building the index by last use over millions of rows)
        // spill to files next to the index, which SQLite deletes as it opens them: not to memory, where
        // ten million rows took 800 MiB, nor to a /tmp that may be small or read-only in a container.
        config.setTempStore(SQLiteConfig.TempStore.FILE);
        config.setTempStoreDirectory(file.getParent().toString());
        config.setPragma(SQLiteConfig.Pragma.WAL_AUTOCHECKPOINT, "10000");
        return config.createConnection("jdbc:sqlite:" + file);
    }

    /** A connection for lookups, with its statement; used by one thread at a time. */
    private static final class Reader {
        final Connection connection;
        final PreparedStatement find;
        final PreparedStatement prefix;
        final PreparedStatement peek;

        Reader(Connection connection) throws SQLException {
            this.connection = connection;
            this.find = connection.prepareStatement("SELECT size, verified FROM item WHERE kind = ? AND digest = ?");
            this.peek = connection.prepareStatement("SELECT size, access FROM item WHERE kind = ? AND digest = ?");
            this.prefix = connection.prepareStatement(
                    "SELECT digest FROM item WHERE kind = ? AND digest >= ? AND digest < ?");
        }
    }

    /** A reader connection, waiting for one if all are in use (for microseconds: lookups are short). */
    private Reader reader() throws SQLException {
        try {
            Reader r = closed ? null : readers.poll(30, TimeUnit.SECONDS);
            if (r == null) {
                throw new SQLException(closed ? "the cache index is closed" : "no reader connection free for 30 s");
            }
            return r;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new SQLException("interrupted while waiting for a reader connection", e);
        }
    }

    void deleter(ContentKind kind, Deleter deleter) {
        deleters.put(kind, deleter);
    }

    long now() {
        return clock.millis();
    }

    /** Whether the last run closed the index cleanly: then rows and files agree, and no walk is needed. */
    boolean wasClean() {
        return wasClean;
    }

    /** Whether this start created the index (a first start, or the old one was unreadable). */
    boolean created() {
        return created;
    }

    /**
     * The lock to hold while making an item's file appear or disappear, and while deciding from the
     * disk whether it is there: stores take it around commits and drops, so those of one digest never
     * interleave. Lookups do not take it.
     */
    Object lockFor(Key key) {
        return stripes[(key.digest().hex().hashCode() & 0x7fffffff) % stripes.length];
    }

    /**
     * Whether the item was committed moments ago, answered from memory: safe on an event loop. It
     * remembers the last {@value #RECENT_COMMITS} commits, for a request that looked the item up just
     * before its download committed it.
     */
    boolean knownPresent(Key key) {
        return recentCommits.getIfPresent(key) != null;
    }

    /**
     * Whether rows and files are known to agree: the reconciliation has finished (or was not needed).
     * Before that, an item without a row may still be on disk, and nothing is evicted.
     */
    boolean complete() {
        return complete;
    }

    /** The item, its use noted; {@code null} when it has no row. Blocks (a worker thread). */
    Entry lookup(Key key) throws IOException {
        Entry e = read(key);
        if (e != null) {
            accessed(key);
        }
        return e;
    }

    private Entry read(Key key) throws IOException {
        try {
            Reader r = reader();
            try {
                r.find.setInt(1, key.kind().code);
                r.find.setBytes(2, bytesOf(key.digest()));
                try (ResultSet rs = r.find.executeQuery()) {
                    return rs.next() ? new Entry(rs.getLong(1), rs.getLong(2) == run) : null;
                }
            } finally {
                readers.add(r);
            }
        } catch (SQLException e) {
            throw failure("look up " + key.digest() + " in", e);
        }
    }

    /** The names the item was fetched for or confirmed under (at most 100). Blocks. */
    List<String> origins(Key key) throws IOException {
        try {
            Reader r = reader();
            try (PreparedStatement q = r.connection.prepareStatement(
                    "SELECT repo FROM origin WHERE kind = ? AND digest = ? LIMIT 100")) {
                q.setInt(1, key.kind().code);
                q.setBytes(2, bytesOf(key.digest()));
                List<String> names = new ArrayList<>();
                try (ResultSet rs = q.executeQuery()) {
                    while (rs.next()) {
                        names.add(rs.getString(1));
                    }
                }
                return names;
            } finally {
                readers.add(r);
            }
        } catch (SQLException e) {
            throw failure("read the origins of " + key.digest() + " from", e);
        }
    }

    /**
     * Records that the item was fetched for, or confirmed under, {@code name}, if the item is stored:
     * a row for content that is not stored would never be deleted (rows go with their item). Yields
     * whether the item is stored. Blocks.
     */
    boolean addOrigin(Key key, String name) throws IOException {
        writeLock.lock();
        try {
            return insertOrigin(key, bytesOf(key.digest()), name);
        } catch (SQLException e) {
            throw failure("record an origin of " + key.digest() + " in", e);
        } finally {
            writeLock.unlock();
        }
    }

    /** Inserts an origin row for a stored item (write lock held); false when the item has no row. */
    private boolean insertOrigin(Key key, byte[] digest, String name) throws SQLException {
        try (PreparedStatement insert = writer.prepareStatement("INSERT OR IGNORE INTO origin SELECT ?, ?, ?"
                + " WHERE EXISTS (SELECT 1 FROM item WHERE kind = ? AND digest = ?)")) {
            insert.setInt(1, key.kind().code);
            insert.setBytes(2, digest);
            insert.setString(3, name);
            insert.setInt(4, key.kind().code);
            insert.setBytes(5, digest);
            if (insert.executeUpdate() == 1) {
                return true;
            }
        }
        try (PreparedStatement q = writer.prepareStatement("SELECT 1 FROM item WHERE kind = ? AND digest = ?")) {
            q.setInt(1, key.kind().code);
            q.setBytes(2, digest);
            try (ResultSet rs = q.executeQuery()) {
                return rs.next();
            }
        }
    }

    /** Size and last use of a stored item. */
    record Use(long size, long lastUseMillis) {
    }

    /**
     * The item's size and last use (the database's, or a use noted since), without counting this as
     * a use; {@code null} when it has no row. Blocks (a worker thread).
     */
    Use peek(Key key) throws IOException {
        try {
            Reader r = reader();
            try {
                r.peek.setInt(1, key.kind().code);
                r.peek.setBytes(2, bytesOf(key.digest()));
                try (ResultSet rs = r.peek.executeQuery()) {
                    if (!rs.next()) {
                        return null;
                    }
                    Long noted = recent.get(key);
                    return new Use(rs.getLong(1), Math.max(rs.getLong(2), noted == null ? 0 : noted));
                }
            } finally {
                readers.add(r);
            }
        } catch (SQLException e) {
            throw failure("look up " + key.digest() + " in", e);
        }
    }

    /** Like {@link #lookup}, and eviction leaves the file alone until {@link #unpin}. */
    Entry pin(Key key) throws IOException {
        pins.merge(key, 1, Integer::sum);
        Entry e = null;
        try {
            if (!unlinking.contains(key)) {
                e = lookup(key);
            }
        } finally {
            if (e == null) {
                unpin(key);
            }
        }
        return e;
    }

    /** Keeps eviction off an item without looking it up (a commit, between its row and its file); ends with {@link #unpin}. */
    void hold(Key key) {
        pins.merge(key, 1, Integer::sum);
    }

    /** Ends a {@link #pin} or {@link #hold}. Never blocks: safe on an event loop. */
    void unpin(Key key) {
        pins.computeIfPresent(key, (k, n) -> n == 1 ? null : n - 1);
    }

    /**
     * Notes a use without touching the database (safe on an event loop). The next upkeep writes it.
     */
    void accessed(Key key) {
        recent.merge(key, now(), Math::max);
        if (recent.size() > NOTES_FLUSH_AT) {
            manyNotes.run();
        }
    }

    /**
     * Waits until eviction has unlinked the file of {@code key}, if it is doing so: call it before
     * making that key's file appear. Blocks (a worker thread).
     */
    void awaitUnlinked(Key key) throws InterruptedIOException {
        synchronized (unlinking) {
            while (unlinking.contains(key)) {
                try {
                    unlinking.wait();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new InterruptedIOException("interrupted while " + key + " was being evicted");
                }
            }
        }
    }

    /**
     * Records an item whose file is about to appear (or is there): call it with {@link #lockFor} held,
     * before making the file appear, so that a crash in between leaves a row without a file (which a
     * lookup forgets), never a file without a row. Marks it verified by this run if {@code verified}.
     */
    void add(Key key, long size, long accessMillis, boolean verified) throws IOException {
        add(key, size, accessMillis, verified, null);
    }

    /**
     * Like {@link #add(Key, long, long, boolean)}, and records {@code origin} (an {@code
     * <upstream>/<repository>} name the item was fetched for) in the same transaction when it is not null.
     */
    void add(Key key, long size, long accessMillis, boolean verified, String origin) throws IOException {
        writeLock.lock();
        try {
            byte[] d = bytesOf(key.digest());
            inTransaction(() -> {
                insertItem.setInt(1, key.kind().code);
                insertItem.setBytes(2, d);
                insertItem.setLong(3, size);
                insertItem.setLong(4, accessMillis);
                insertItem.setLong(5, verified ? run : 0);
                if (insertItem.executeUpdate() == 1) {
                    account(key.kind(), size, 1);
                } else if (verified) {
                    setVerified(key, d);
                }
                if (origin != null) {
                    insertOrigin(key, d, origin);
                }
            });
        } catch (SQLException e) {
            throw failure("record " + key.digest() + " in", e);
        } finally {
            writeLock.unlock();
        }
        if (verified) {
            recentCommits.put(key, Boolean.TRUE);
        }
        synchronized (loadLock) {
            if (removedWhileLoading != null) {
                removedWhileLoading.remove(key);
            }
        }
    }

    /** Marks an item as hashed since this start. */
    void verified(Key key) throws IOException {
        writeLock.lock();
        try {
            setVerified(key, bytesOf(key.digest()));
        } catch (SQLException e) {
            throw failure("mark " + key.digest() + " verified in", e);
        } finally {
            writeLock.unlock();
        }
    }

    private void setVerified(Key key, byte[] digest) throws SQLException {
        markVerified.setLong(1, run);
        markVerified.setInt(2, key.kind().code);
        markVerified.setBytes(3, digest);
        markVerified.executeUpdate();
    }

    /** Forgets an item whose file is gone or was dropped (call it with {@link #lockFor} held). */
    void remove(Key key) throws IOException {
        synchronized (loadLock) {
            if (removedWhileLoading != null) {
                removedWhileLoading.add(key);
            }
        }
        recentCommits.invalidate(key);
        recent.remove(key);
        writeLock.lock();
        try {
            delete(List.of(key));
        } catch (SQLException e) {
            throw failure("remove " + key.digest() + " from", e);
        } finally {
            writeLock.unlock();
        }
    }

    /** Work on the writer connection that may fail as JDBC does. */
    private interface WriterWork {
        void run() throws SQLException;
    }

    /** Runs {@code work} in one transaction of the writer (the write lock held by the caller); rolled back if it fails. */
    private void inTransaction(WriterWork work) throws SQLException {
        writer.setAutoCommit(false);
        try {
            work.run();
            writer.commit();
        } catch (SQLException | RuntimeException e) {
            writer.rollback();
            throw e;
        } finally {
            writer.setAutoCommit(true);
        }
    }

    /** Deletes the rows of {@code keys} in one transaction (write lock held); yields the sizes of those found. */
    private long[] delete(List<Key> keys) throws SQLException {
        long[] sizes = new long[keys.size()];
        inTransaction(() -> {
            for (int i = 0; i < keys.size(); i++) {
                Key k = keys.get(i);
                deleteItem.setInt(1, k.kind().code);
                deleteItem.setBytes(2, bytesOf(k.digest()));
                sizes[i] = -1;
                try (ResultSet rs = deleteItem.executeQuery()) {
                    if (rs.next()) {
                        sizes[i] = rs.getLong(1);
                    }
                }
            }
        });
        for (int i = 0; i < keys.size(); i++) {
            if (sizes[i] >= 0) {
                account(keys.get(i).kind(), -sizes[i], -1);
            }
        }
        return sizes;
    }

    /** Starts a reconciliation: from now until {@link #reconciled}, removals are remembered. */
    void reconciling() {
        synchronized (loadLock) {
            if (removedWhileLoading == null) {
                removedWhileLoading = new java.util.HashSet<>();
            }
        }
        complete = false;
    }

    /**
     * Adds rows for files a reconciliation found without one, in one transaction, leaving out items
     * removed since it began (their files may have been listed before they went). Their last use is
     * the file's modification time. Yields how many were added.
     */
    int load(List<Scanned> found) throws IOException {
        if (found.isEmpty()) {
            return 0;
        }
        int added = 0;
        long[] sizes = new long[found.size()];
        synchronized (loadLock) {
            writeLock.lock();
            try {
                inTransaction(() -> {
                    for (int i = 0; i < found.size(); i++) {
                        Scanned s = found.get(i);
                        sizes[i] = -1;
                        if (removedWhileLoading != null && removedWhileLoading.contains(s.key())) {
                            continue;
                        }
                        insertItem.setInt(1, s.key().kind().code);
                        insertItem.setBytes(2, bytesOf(s.key().digest()));
                        insertItem.setLong(3, s.size());
                        insertItem.setLong(4, s.modifiedMillis());
                        insertItem.setLong(5, 0); // not hashed by this run
                        if (insertItem.executeUpdate() == 1) {
                            sizes[i] = s.size();
                        }
                    }
                });
                for (int i = 0; i < found.size(); i++) {
                    if (sizes[i] >= 0) {
                        account(found.get(i).key().kind(), sizes[i], 1);
                        added++;
                    }
                }
            } catch (SQLException e) {
                throw failure("add " + found.size() + " found files to", e);
            } finally {
                writeLock.unlock();
            }
        }
        return added;
    }

    /**
     * The digests of {@code kind} and {@code algorithm} with rows whose hex starts with {@code prefix}
     * (two hex digits: one fan-out folder).
     */
    List<Digest> rowsUnder(ContentKind kind, String algorithm, String prefix) throws IOException {
        int first = Integer.parseInt(prefix, 16);
        int length = algorithm.equals("sha256") ? 32 : 64;
        List<Digest> rows = new ArrayList<>();
        try {
            Reader r = reader();
            try {
                r.prefix.setInt(1, kind.code);
                r.prefix.setBytes(2, new byte[] {(byte) first});
                // The upper bound: the next prefix, or past every digest starting with ff.
                r.prefix.setBytes(3, upperBound(first));
                try (ResultSet rs = r.prefix.executeQuery()) {
                    while (rs.next()) {
                        byte[] d = rs.getBytes(1);
                        if (d.length == length) {
                            rows.add(new Digest(algorithm, HexFormat.of().formatHex(d)));
                        }
                    }
                }
            } finally {
                readers.add(r);
            }
        } catch (SQLException e) {
            throw failure("list " + kind.label() + "s under " + algorithm + "/" + prefix + " in", e);
        }
        return rows;
    }

    /** The smallest digest bytes past every digest whose first byte is {@code first}. */
    private static byte[] upperBound(int first) {
        if (first < 0xff) {
            return new byte[] {(byte) (first + 1)};
        }
        byte[] past = new byte[65]; // longer than any digest, all ff
        java.util.Arrays.fill(past, (byte) 0xff);
        return past;
    }

    /** The reconciliation is done: rows and files agree, and eviction may start. */
    void reconciled() throws IOException {
        writeLock.lock();
        try (Statement s = writer.createStatement()) {
            s.executeUpdate("CREATE INDEX IF NOT EXISTS item_by_access ON item(access)");
        } catch (SQLException e) {
            throw failure("index by last use", e);
        } finally {
            writeLock.unlock();
        }
        synchronized (loadLock) {
            removedWhileLoading = null;
        }
        complete = true;
    }

    long bytes(ContentKind kind) {
        return bytes.get(kind).get();
    }

    long count(ContentKind kind) {
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
     * Writes the uses noted by {@link #accessed}, then removes unread content older than
     * {@code maxAge}; when over {@code maxSize}, the least recently used content down to the low
     * watermark; and then the least recently used content until {@code bytesToFree} bytes are gone
     * (the file system is short of space; counted with reason {@code disk}). Pinned items are skipped.
     * Evicts nothing before the reconciliation finished. Blocks: run it on a worker thread.
     */
    Upkeep maintain(long bytesToFree) throws IOException {
        writeNotes();
        if (!complete) {
            return new Upkeep(0, 0, 0);
        }
        long itemsBefore = evictedItems;
        long bytesBefore = evictedBytes;
        if (maxAgeMillis > 0) {
            long cutoff = now() - maxAgeMillis;
            evict("age", cutoff, Long.MAX_VALUE);
        }
        if (overLimit()) {
            evict("size", Long.MAX_VALUE, Long.MAX_VALUE);
        }
        long freed = bytesToFree > 0 ? evict("disk", Long.MAX_VALUE, bytesToFree) : 0;
        return new Upkeep(evictedItems - itemsBefore, evictedBytes - bytesBefore, freed);
    }

    /** Writes the noted uses to the database, in one transaction; a use newer than a row's stays. */
    void writeNotes() throws IOException {
        if (recent.isEmpty()) {
            return;
        }
        List<Map.Entry<Key, Long>> noted = new ArrayList<>(recent.size());
        for (Map.Entry<Key, Long> r : recent.entrySet()) {
            Map.Entry<Key, Long> note = Map.entry(r.getKey(), r.getValue());
            recent.remove(note.getKey(), note.getValue()); // a newer note stays for the next time
            noted.add(note);
        }
        writeLock.lock();
        try {
            inTransaction(() -> {
                for (Map.Entry<Key, Long> n : noted) {
                    touchItem.setLong(1, n.getValue());
                    touchItem.setInt(2, n.getKey().kind().code);
                    touchItem.setBytes(3, bytesOf(n.getKey().digest()));
                    touchItem.setLong(4, n.getValue());
                    touchItem.executeUpdate();
                }
            });
        } catch (SQLException e) {
            for (Map.Entry<Key, Long> n : noted) {
                recent.merge(n.getKey(), n.getValue(), Math::max); // tried again next time
            }
            throw failure("write " + noted.size() + " uses to", e);
        } finally {
            writeLock.unlock();
        }
    }

    /** A candidate for eviction, as the query found it. */
    private record Candidate(Key key, long size, long access, byte[] digestBytes) {
    }

    /**
     * Evicts, least recently used first, items last used before {@code before}: for {@code size} until
     * the low watermark is reached, otherwise until {@code enough} bytes are gone or none is left.
     * Works in batches of {@link #EVICT_BATCH}; yields the bytes removed.
     */
    private long evict(String reason, long before, long enough) throws IOException {
        boolean bySize = reason.equals("size");
        long freed = 0;
        long afterAccess = Long.MIN_VALUE;
        int afterKind = -1;
        byte[] afterDigest = new byte[0];
        while (!closed && !stopping) {
            if ((bySize && totalBytes() <= lowBytes) || freed >= enough) {
                break;
            }
            List<Candidate> batch = new ArrayList<>(EVICT_BATCH);
            try {
                Reader r = reader();
                try (PreparedStatement q = r.connection.prepareStatement(
                        "SELECT kind, digest, size, access FROM item INDEXED BY item_by_access"
                                + " WHERE access < ? AND (access, kind, digest) > (?, ?, ?)"
                                + " ORDER BY access, kind, digest LIMIT " + EVICT_BATCH)) {
                    q.setLong(1, before);
                    q.setLong(2, afterAccess);
                    q.setInt(3, afterKind);
                    q.setBytes(4, afterDigest);
                    try (ResultSet rs = q.executeQuery()) {
                        while (rs.next()) {
                            byte[] d = rs.getBytes(2);
                            String alg = d.length == 32 ? "sha256" : "sha512";
                            batch.add(new Candidate(new Key(ContentKind.of(rs.getInt(1)),
                                    new Digest(alg, HexFormat.of().formatHex(d))), rs.getLong(3), rs.getLong(4), d));
                        }
                    }
                } finally {
                    readers.add(r);
                }
            } catch (SQLException e) {
                throw failure("find what to evict in", e);
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
        List<Key> victims = new ArrayList<>();
        try {
            long planned = 0;
            long total = totalBytes();
            int considered = 0;
            for (Candidate c : batch) {
                Key k = c.key();
                if ((bySize && total - planned <= lowBytes) || planned >= enough) {
                    break;
                }
                considered++;
                if (pins.containsKey(k)) {
                    continue;
                }
                unlinking.add(k);
                if (pins.containsKey(k)) { // pinned meanwhile: the pin may not have seen the mark
                    unlinked(List.of(k));
                    continue;
                }
                victims.add(k);
                planned += c.size();
            }
            long[] sizes;
            writeLock.lock();
            try {
                sizes = delete(victims);
            } catch (SQLException e) {
                throw failure("remove " + victims.size() + " evicted items from", e);
            } finally {
                writeLock.unlock();
            }
            boolean[] failed = unlink(victims, sizes);
            long freed = 0;
            List<Integer> kept = new ArrayList<>();
            for (int i = 0; i < victims.size(); i++) {
                Key key = victims.get(i);
                if (sizes[i] < 0) {
                    continue; // removed meanwhile
                }
                if (failed[i]) {
                    kept.add(i);
                    continue;
                }
                events.evicted(key.kind().label(), reason, sizes[i]);
                freed += sizes[i];
                evictedItems++;
                evictedBytes += sizes[i];
            }
            for (int i : kept) {
                add(victims.get(i), sizes[i], now(), false);
            }
            return new long[] {freed, considered};
        } finally {
            unlinked(victims);
        }
    }

    /**
     * Deletes the files of the victims whose rows were removed ({@code sizes[i] >= 0}), on
     * {@value #UNLINK_THREADS} threads: an unlink takes tens of microseconds, mostly waiting for the
     * file system, so they overlap well. Yields which could not be deleted (logged).
     */
    private boolean[] unlink(List<Key> victims, long[] sizes) throws IOException {
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
                    Key key = victims.get(i);
                    recentCommits.invalidate(key);
                    recent.remove(key);
                    try {
                        deleters.get(key.kind()).delete(key.digest());
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

    private void unlinked(List<Key> keys) {
        if (keys.isEmpty()) {
            return;
        }
        synchronized (unlinking) {
            keys.forEach(unlinking::remove);
            unlinking.notifyAll(); // stores waiting in awaitUnlinked
        }
    }

    private void account(ContentKind kind, long size, int count) {
        bytes.get(kind).addAndGet(size);
        counts.get(kind).addAndGet(count);
    }

    private IOException failure(String what, SQLException e) {
        return new IOException("cannot " + what + " the cache index " + file + ": " + e.getMessage(), e);
    }

    static byte[] bytesOf(Digest digest) {
        return HexFormat.of().parseHex(digest.hex());
    }

    /** Makes an eviction under way stop after its batch (the process is stopping). Never blocks. */
    void stop() {
        stopping = true;
    }

    /** Closes the connections as a crash would: nothing noted is written, the index is not marked clean. */
    void abandon() {
        closed = true;
        unlinkers.shutdownNow();
        writeLock.lock();
        try {
            writer.close();
        } catch (SQLException e) {
            // as a crash would
        } finally {
            writeLock.unlock();
        }
        closeReaders();
    }

    /**
     * Writes the noted uses, records that rows and files agree (when the reconciliation finished) and
     * closes the database. Call it once nothing else uses the index.
     */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        try {
            writeNotes();
        } catch (IOException e) {
            LOG.warn("the last uses were not written to the cache index: {}", e.getMessage());
        }
        closed = true;
        writeLock.lock();
        try {
            if (complete) {
                try (Statement s = writer.createStatement()) {
                    s.executeUpdate("UPDATE meta SET value = 1 WHERE key = 'clean'");
                }
            }
            writer.close();
        } catch (SQLException e) {
            LOG.warn("cannot close the cache index {}: {}", file, e.getMessage());
        } finally {
            writeLock.unlock();
        }
        unlinkers.shutdownNow();
        closeReaders();
    }

    private void closeReaders() {
        synchronized (allReaders) {
            for (Reader r : allReaders) {
                try {
                    r.connection.close();
                } catch (SQLException e) {
                    // closing anyway
                }
            }
            allReaders.clear();
        }
        readers.clear();
    }
}
