package dev.registrymirror.cache;

import com.github.benmanes.caffeine.cache.Cache;
import com.github.benmanes.caffeine.cache.Caffeine;
import java.io.IOException;
import java.io.InterruptedIOException;
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
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.ReentrantLock;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

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
 * <p>Implementation notes. The index is this class and the parts it delegates to, each in a file of
 * its own: {@link IndexDatabase} (the file, the schema and its version), {@link ReaderPool} (the
 * connections lookups read with), {@link Pins} (what eviction must leave alone, and what it is
 * unlinking), {@link Eviction} (what goes when over the limits) and {@link Reconciliation} (making
 * rows and files agree after a crash).
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
 * <li>A reader that {@link #pin pins} an item keeps eviction off its file until {@link #unpin}.
 * </ul>
 */
final class CacheIndex implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(CacheIndex.class);
    /** Rows inserted per transaction by a reconciliation. */
    static final int LOAD_BATCH = 2000;
    /** Noted uses past which the upkeep is asked to write them at once. */
    private static final int NOTES_FLUSH_AT = 50_000;
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
    private final Pins pins = new Pins();
    private final Cache<Key, Boolean> recentCommits = Caffeine.newBuilder().maximumSize(RECENT_COMMITS).build();
    private final Object[] stripes = new Object[256];
    private final ReentrantLock writeLock = new ReentrantLock();
    private final Connection writer;
    /** The writer's statements, prepared once; used with the write lock held. */
    private final PreparedStatement insertItem;
    private final PreparedStatement markVerified;
    private final PreparedStatement deleteItem;
    private final PreparedStatement touchItem;
    /** Connections for lookups. */
    private final ReaderPool readers;
    /** This start's number: an item verified since this start carries it. */
    private final long run;
    /** Whether the database was created by this start (nothing was indexed before). */
    private final boolean created;
    /** Whether the previous run closed the index cleanly, so its rows and the files agree. */
    private final boolean wasClean;
    private volatile boolean complete;
    /** The blobs that may be stored (see {@link Presence}); answers once {@link #fillPresence} has run. */
    private final Presence presence;
    private volatile boolean presenceFilled;
    private final Reconciliation reconciliation = new Reconciliation(this);
    private volatile boolean closed;
    /** Set by {@link #stop}: eviction ends after its batch. */
    private volatile boolean stopping;
    private final Eviction eviction = new Eviction(this);

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
            try (ResultSet rs = s.executeQuery("SELECT kind, items, bytes FROM totals")) {
                while (rs.next()) {
                    ContentKind k = ContentKind.of(rs.getInt(1));
                    counts.get(k).set(rs.getLong(2));
                    bytes.get(k).set(rs.getLong(3));
                }
            }
        }
        this.presence = new Presence(counts.get(ContentKind.BLOB).get());
        this.readers = new ReaderPool(file); // the writer is closed by IndexDatabase if this fails
        writer.setAutoCommit(true);
    }

    /**
     * Opens the index in {@code file}, creating it if it does not exist (see {@link IndexDatabase}).
     *
     * @param manyNotes called (from any thread, quickly) when so many uses are noted that the upkeep
     *                  should write them now
     */
    static CacheIndex open(Path file, Clock clock, long maxBytes, long lowBytes, Duration maxAge, StorageEvents events,
                           Runnable manyNotes) throws IOException {
        return IndexDatabase.open(file, (writer, created) ->
                new CacheIndex(file, clock, maxBytes, lowBytes, maxAge, events, manyNotes, writer, created));
    }

    /** Loads SQLite's native library (see {@link IndexDatabase#loadDriver}). */
    static void loadDriver(Path folder) throws IOException {
        IndexDatabase.loadDriver(folder);
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
     * Whether the blob may be stored, answered from memory: false only when it certainly is not (no
     * row, and the reconciliation done), so that a miss needs no lookup. Safe on an event loop.
     */
    boolean mayHold(Key key) {
        return !presenceFilled || !complete || key.kind() != ContentKind.BLOB
                || presence.mightContain(bytesOf(key.digest()));
    }

    /**
     * Puts every stored blob into the filter {@link #mayHold} reads, then lets it answer. Rows written
     * meanwhile put themselves in before they are written. Blocks (reads every blob's row).
     */
    void fillPresence() throws IOException {
        try {
            int n = readers.read(r -> {
                int count = 0;
                try (PreparedStatement q = r.connection.prepareStatement("SELECT digest FROM item WHERE kind = ?")) {
                    q.setInt(1, ContentKind.BLOB.code);
                    try (ResultSet rs = q.executeQuery()) {
                        while (rs.next()) {
                            presence.add(rs.getBytes(1));
                            count++;
                        }
                    }
                }
                return count;
            });
            presenceFilled = true;
            LOG.debug("{} blobs in the presence filter ({} bits)", n, presence.size());
        } catch (SQLException e) {
            throw failure("read the stored blobs from", e);
        }
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
            return readers.read(r -> {
                r.find.setInt(1, key.kind().code);
                r.find.setBytes(2, bytesOf(key.digest()));
                try (ResultSet rs = r.find.executeQuery()) {
                    return rs.next() ? new Entry(rs.getLong(1), rs.getLong(2) == run) : null;
                }
            });
        } catch (SQLException e) {
            throw failure("look up " + key.digest() + " in", e);
        }
    }

    /** The names the item was fetched for or confirmed under (at most 100). Blocks. */
    List<String> origins(Key key) throws IOException {
        try {
            return readers.read(r -> {
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
                }
            });
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
            return readers.read(r -> {
                r.peek.setInt(1, key.kind().code);
                r.peek.setBytes(2, bytesOf(key.digest()));
                try (ResultSet rs = r.peek.executeQuery()) {
                    if (!rs.next()) {
                        return null;
                    }
                    Long noted = recent.get(key);
                    return new Use(rs.getLong(1), Math.max(rs.getLong(2), noted == null ? 0 : noted));
                }
            });
        } catch (SQLException e) {
            throw failure("look up " + key.digest() + " in", e);
        }
    }

    /** Like {@link #lookup}, and eviction leaves the file alone until {@link #unpin}. */
    Entry pin(Key key) throws IOException {
        pins.hold(key);
        Entry e = null;
        try {
            if (!pins.beingUnlinked(key)) {
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
        pins.hold(key);
    }

    /** Ends a {@link #pin} or {@link #hold}. Never blocks: safe on an event loop. */
    void unpin(Key key) {
        pins.unpin(key);
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
        pins.awaitUnlinked(key);
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
            if (key.kind() == ContentKind.BLOB) {
                presence.add(d); // before the row: mayHold never says no to a stored blob
            }
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
        reconciliation.added(key);
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
        reconciliation.removed(key);
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

    /** Starts a reconciliation ({@link Reconciliation}): until {@link #reconciled}, nothing is evicted. */
    void reconciling() {
        reconciliation.begin();
        complete = false;
    }

    /** Adds rows for files a reconciliation found without one (see {@link Reconciliation#load}). */
    int load(List<Scanned> found) throws IOException {
        return reconciliation.load(found);
    }

    /** The digests with rows under one fan-out folder (see {@link Reconciliation#rowsUnder}). */
    List<Digest> rowsUnder(ContentKind kind, String algorithm, String prefix) throws IOException {
        return reconciliation.rowsUnder(kind, algorithm, prefix);
    }

    /**
     * Inserts rows for found files in one transaction, leaving out those in {@code skip} (removed
     * since the reconciliation began). Their last use is the file's modification time. Yields how many
     * were added. Called by the reconciliation under its lock.
     */
    int insertFound(List<Scanned> found, Set<Key> skip) throws IOException {
        int added = 0;
        long[] sizes = new long[found.size()];
        writeLock.lock();
        try {
            inTransaction(() -> {
                for (int i = 0; i < found.size(); i++) {
                    Scanned s = found.get(i);
                    sizes[i] = -1;
                    if (skip != null && skip.contains(s.key())) {
                        continue;
                    }
                    byte[] digest = bytesOf(s.key().digest());
                    if (s.key().kind() == ContentKind.BLOB) {
                        presence.add(digest);
                    }
                    insertItem.setInt(1, s.key().kind().code);
                    insertItem.setBytes(2, digest);
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
        return added;
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
        reconciliation.end();
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
     * Writes the uses noted by {@link #accessed}, then evicts what the limits say must go ({@link
     * Eviction#run}). Evicts nothing before the reconciliation finished. Blocks: run it on a worker thread.
     */
    Upkeep maintain(long bytesToFree) throws IOException {
        writeNotes();
        if (!complete) {
            return new Upkeep(0, 0, 0);
        }
        return eviction.run(bytesToFree);
    }

    /** Removes the rows of {@code keys} in one transaction; yields each one's size, -1 for one not there. */
    long[] deleteRows(List<Key> keys) throws IOException {
        writeLock.lock();
        try {
            return delete(keys);
        } catch (SQLException e) {
            throw failure("remove " + keys.size() + " evicted items from", e);
        } finally {
            writeLock.unlock();
        }
    }

    /** Forgets what memory knows of {@code key}: a recent commit, a noted use (its file is going). */
    void forgetNotes(Key key) {
        recentCommits.invalidate(key);
        recent.remove(key);
    }

    /** Deletes {@code key}'s file through its store's deleter. */
    void deleteFile(Key key) throws IOException {
        deleters.get(key.kind()).delete(key.digest());
    }

    /** Whether eviction may go on: the index is neither closed nor stopping. */
    boolean running() {
        return !closed && !stopping;
    }

    Pins pins() {
        return pins;
    }

    ReaderPool readers() {
        return readers;
    }

    StorageEvents events() {
        return events;
    }

    long lowBytes() {
        return lowBytes;
    }

    long maxAgeMillis() {
        return maxAgeMillis;
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

    private void account(ContentKind kind, long size, int count) {
        bytes.get(kind).addAndGet(size);
        counts.get(kind).addAndGet(count);
    }

    IOException failure(String what, SQLException e) {
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
        eviction.close();
        writeLock.lock();
        try {
            writer.close();
        } catch (SQLException e) {
            // as a crash would
        } finally {
            writeLock.unlock();
        }
        readers.close();
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
        eviction.close();
        readers.close();
    }
}
