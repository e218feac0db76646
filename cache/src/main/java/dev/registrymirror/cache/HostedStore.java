package dev.registrymirror.cache;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.Clock;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Stream;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.sqlite.SQLiteConfig;

/**
 * Hosted repositories' content: what teams push here, the only copy there is. Blobs and manifests are
 * files by digest under {@code hosted/}; which repository holds which of them, what each manifest names
 * and the tags are rows of an SQLite database ({@code hosted/hosted.db}), changed in transactions.
 *
 * <p>Unlike the cache, nothing here is evicted, and nothing is rebuilt from the disk: the database is
 * the truth, synchronously written ({@code synchronous=FULL}), and a database that cannot be read stops
 * the start instead of being set aside. Files appear before the rows that make them visible (a blob's
 * file is flushed and renamed into place, then its row committed), so a crash at any point leaves at
 * worst a file without a row, which garbage collection removes; a manifest's row is committed only in
 * the transaction that finds everything it names present in its repository.
 *
 * <p>Every method blocks (the disk, the database): call it from a worker thread. One connection
 * writes, under this object's monitor; reads use it too (pushes are rare next to pulls, and a hosted
 * pull reads two rows).
 */
public final class HostedStore implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(HostedStore.class);
    private static final int SCHEMA = 1;
    /** What a manifest names: kind 0 a blob, 1 a manifest. */
    private static final int BLOB = 0;
    private static final int MANIFEST = 1;

    private final Path blobs;
    private final Path manifests;
    private final Path uploads;
    private final Clock clock;
    private final long maxBytes;
    private final Connection db;
    /** This start's number: a blob hashed since start carries it. */
    private final long thisRun;
    /** Bytes of hosted blobs and manifests, as the database counts them. */
    private final AtomicLong bytes = new AtomicLong();
    private final AtomicLong blobCount = new AtomicLong();
    private final AtomicLong manifestCount = new AtomicLong();

    /** The push would take hosted content over {@code hosted.maxSize}. */
    public static final class QuotaExceeded extends IOException {
        private static final long serialVersionUID = 1L;

        /** {@code adding} bytes would go over {@code max} with {@code stored} held already. */
        public QuotaExceeded(long stored, long adding, long max) {
            super("hosted content would take " + (stored + adding) + " bytes, over hosted.maxSize (" + max
                    + " bytes; " + stored + " stored)");
        }
    }

    /** A manifest names content its repository does not hold. */
    public static final class MissingReference extends IOException {
        private static final long serialVersionUID = 1L;
        public final boolean blob;
        public final Digest digest;

        MissingReference(boolean blob, Digest digest) {
            super((blob ? "blob " : "manifest ") + digest + " is not in the repository");
            this.blob = blob;
            this.digest = digest;
        }
    }

    /**
     * A blob or manifest file of a repository; {@code verified}: its bytes were hashed by this run of
     * the mirror (a blob's, written or checked since start; a manifest's are checked as they are read).
     */
    public record Item(Digest digest, long size, Path path, String mediaType, boolean verified) {
        public Item(Digest digest, long size, Path path, String mediaType) {
            this(digest, size, path, mediaType, true);
        }
    }

    /**
     * What a manifest names, read from it by the caller: the blobs (config and layers) and manifests (an
     * index's) that must be in the repository, and for the referrers API its subject, artifact type and
     * annotations (a JSON object, or null).
     */
    public record References(List<Digest> blobs, List<Digest> manifests, Digest subject, String artifactType,
                             String annotations) {
        public References {
            blobs = List.copyOf(blobs);
            manifests = List.copyOf(manifests);
        }
    }

    /** A manifest whose subject is another: an entry of the referrers API. */
    public record Referrer(Digest digest, String mediaType, long size, String artifactType, String annotations) {
    }

    private HostedStore(Path root, Clock clock, long maxBytes, Connection db, long run) throws IOException {
        this.thisRun = run;
        this.blobs = root.resolve("blobs");
        this.manifests = root.resolve("manifests");
        this.uploads = root.resolve("uploads");
        this.clock = clock;
        this.maxBytes = maxBytes > 0 ? maxBytes : Long.MAX_VALUE;
        this.db = db;
        Files.createDirectories(blobs);
        Files.createDirectories(manifests);
        Files.createDirectories(uploads);
    }

    /**
     * Opens (creating if needed) the hosted content under {@code root}. Uploads a previous run left
     * unfinished are removed: no client resumes them after a restart.
     *
     * @param maxBytes {@code hosted.maxSize}; 0 for no limit
     */
    public static HostedStore open(Path root, Clock clock, long maxBytes) throws IOException {
        Files.createDirectories(root);
        IndexDatabase.loadDriver(root);
        Path file = root.resolve("hosted.db");
        Connection c;
        long run;
        try {
            c = connect(file);
            schema(c);
            run = nextRun(c);
        } catch (SQLException e) {
            // The only copy of what was pushed: never set aside and started afresh.
            throw new IOException("cannot open the hosted repositories' database " + file + ": " + e.getMessage()
                    + " (it is the only record of pushed images: restore it from a backup, or move it away to start"
                    + " with no hosted content)", e);
        }
        HostedStore s = new HostedStore(root, clock, maxBytes, c, run);
        s.removeUploads();
        s.readTotals();
        return s;
    }

    private static Connection connect(Path file) throws SQLException {
        SQLiteConfig config = new SQLiteConfig();
        config.setJournalMode(SQLiteConfig.JournalMode.WAL);
        // Pushed content has no other copy: a commit is on the disk before the push is answered.
        config.setSynchronous(SQLiteConfig.SynchronousMode.FULL);
        config.setBusyTimeout(30_000);
        config.enforceForeignKeys(true);
        Connection c = config.createConnection("jdbc:sqlite:" + file);
        c.setAutoCommit(false);
        return c;
    }

    /** Counts this start; yields its number. */
    private static long nextRun(Connection c) throws SQLException {
        try (Statement s = c.createStatement()) {
            s.executeUpdate("INSERT OR IGNORE INTO meta VALUES('run', 0)");
            s.executeUpdate("UPDATE meta SET value = value + 1 WHERE key = 'run'");
            try (ResultSet rs = s.executeQuery("SELECT value FROM meta WHERE key = 'run'")) {
                rs.next();
                long run = rs.getLong(1);
                c.commit();
                return run;
            }
        }
    }

    private static void schema(Connection c) throws SQLException {
        try (Statement s = c.createStatement()) {
            s.executeUpdate("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL)");
            s.executeUpdate("INSERT OR IGNORE INTO meta VALUES('schema', " + SCHEMA + ")");
            try (ResultSet rs = s.executeQuery("SELECT value FROM meta WHERE key = 'schema'")) {
                long found = rs.next() ? rs.getLong(1) : -1;
                if (found != SCHEMA) {
                    throw new SQLException("schema version " + found + ", this version reads " + SCHEMA);
                }
            }
            // Content by digest (text, "sha256:..."); created: epoch milliseconds, for collection's grace.
            s.executeUpdate("CREATE TABLE IF NOT EXISTS blob(digest TEXT PRIMARY KEY, size INTEGER NOT NULL,"
                    + " created INTEGER NOT NULL, verified INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID");
            // verified: the start (meta 'run') that last hashed the file. Databases made before it lack it.
            boolean hasVerified = false;
            try (ResultSet rs = s.executeQuery("PRAGMA table_info(blob)")) {
                while (rs.next()) {
                    hasVerified |= "verified".equals(rs.getString("name"));
                }
            }
            if (!hasVerified) {
                s.executeUpdate("ALTER TABLE blob ADD COLUMN verified INTEGER NOT NULL DEFAULT 0");
            }
            s.executeUpdate("CREATE TABLE IF NOT EXISTS manifest(digest TEXT PRIMARY KEY, media_type TEXT NOT NULL,"
                    + " size INTEGER NOT NULL, subject TEXT, artifact_type TEXT, annotations TEXT,"
                    + " created INTEGER NOT NULL) WITHOUT ROWID");
            // What each manifest names (kind 0 blob, 1 manifest): what collection keeps.
            s.executeUpdate("CREATE TABLE IF NOT EXISTS ref(manifest TEXT NOT NULL REFERENCES manifest(digest)"
                    + " ON DELETE CASCADE, kind INTEGER NOT NULL, child TEXT NOT NULL,"
                    + " PRIMARY KEY(manifest, kind, child)) WITHOUT ROWID");
            s.executeUpdate("CREATE INDEX IF NOT EXISTS ref_by_child ON ref(kind, child)");
            // Which repository holds what: a blob uploaded or mounted there, a manifest pushed there.
            s.executeUpdate("CREATE TABLE IF NOT EXISTS repo_blob(repo TEXT NOT NULL, digest TEXT NOT NULL"
                    + " REFERENCES blob(digest) ON DELETE CASCADE, linked INTEGER NOT NULL,"
                    + " PRIMARY KEY(repo, digest)) WITHOUT ROWID");
            s.executeUpdate("CREATE INDEX IF NOT EXISTS repo_blob_by_digest ON repo_blob(digest)");
            s.executeUpdate("CREATE TABLE IF NOT EXISTS repo_manifest(repo TEXT NOT NULL, digest TEXT NOT NULL"
                    + " REFERENCES manifest(digest) ON DELETE CASCADE, PRIMARY KEY(repo, digest)) WITHOUT ROWID");
            s.executeUpdate("CREATE INDEX IF NOT EXISTS repo_manifest_by_digest ON repo_manifest(digest)");
            s.executeUpdate("CREATE TABLE IF NOT EXISTS tag(repo TEXT NOT NULL, tag TEXT NOT NULL, digest TEXT NOT NULL,"
                    + " PRIMARY KEY(repo, tag)) WITHOUT ROWID");
        }
        c.commit();
    }

    private synchronized void readTotals() throws IOException {
        try (Statement s = db.createStatement()) {
            long total = 0;
            try (ResultSet rs = s.executeQuery("SELECT count(*), coalesce(sum(size), 0) FROM blob")) {
                rs.next();
                blobCount.set(rs.getLong(1));
                total += rs.getLong(2);
            }
            try (ResultSet rs = s.executeQuery("SELECT count(*), coalesce(sum(size), 0) FROM manifest")) {
                rs.next();
                manifestCount.set(rs.getLong(1));
                total += rs.getLong(2);
            }
            bytes.set(total);
            db.commit();
        } catch (SQLException e) {
            throw io("read the totals", e);
        }
    }

    /** Bytes of hosted blobs and manifests. */
    public long bytes() {
        return bytes.get();
    }

    public long blobCount() {
        return blobCount.get();
    }

    public long manifestCount() {
        return manifestCount.get();
    }

    /** The quota, {@code Long.MAX_VALUE} for none. */
    public long maxBytes() {
        return maxBytes;
    }

    // ---------------------------------------------------------------- uploads

    /** The file of upload {@code id} (made by the caller, appended to as chunks arrive). */
    public Path uploadFile(String id) {
        return uploads.resolve(id);
    }

    /** Creates the empty file of a new upload. */
    public Path newUpload(String id) throws IOException {
        return Files.createFile(uploadFile(id));
    }

    /** Removes an upload's data; quiet if it is gone. */
    public void discardUpload(String id) {
        try {
            Files.deleteIfExists(uploadFile(id));
        } catch (IOException e) {
            LOG.warn("hosted: cannot delete upload {}: {}", id, e.getMessage());
        }
    }

    private void removeUploads() throws IOException {
        try (Stream<Path> files = Files.list(uploads)) {
            for (Path p : (Iterable<Path>) files::iterator) {
                Files.deleteIfExists(p);
            }
        }
    }

    // ---------------------------------------------------------------- blobs

    /** The blob, if {@code repo} holds it (uploaded or mounted there). */
    public synchronized Optional<Item> blob(String repo, Digest digest) throws IOException {
        try (PreparedStatement q = db.prepareStatement("SELECT b.size, b.verified FROM repo_blob r JOIN blob b"
                + " ON b.digest = r.digest WHERE r.repo = ? AND r.digest = ?")) {
            q.setString(1, repo);
            q.setString(2, digest.toString());
            try (ResultSet rs = q.executeQuery()) {
                Optional<Item> found = rs.next()
                        ? Optional.of(new Item(digest, rs.getLong(1), StorageScan.fanOut(blobs, digest), null,
                        rs.getLong(2) == thisRun))
                        : Optional.empty();
                db.commit();
                return found;
            }
        } catch (SQLException e) {
            throw io("look up a blob", e);
        }
    }

    /** {@link #commitBlob(String, Path, Digest, long, Path)} with no copy elsewhere to share. */
    public Item commitBlob(String repo, Path upload, Digest digest, long size) throws IOException {
        return commitBlob(repo, upload, digest, size, null);
    }

    /**
     * Makes a verified upload blob {@code digest} of {@code repo}: the file is flushed and moved into
     * place (unless the blob is stored already, from any repository), then the repository's row is
     * committed. Within the quota, or {@link QuotaExceeded} with nothing changed.
     *
     * @param shared the same bytes already on this file system (the cache's verified copy), or null: a
     *               hard link to them takes the upload's place, so the blob is stored once
     */
    public Item commitBlob(String repo, Path upload, Digest digest, long size, Path shared) throws IOException {
        // Flushed before the lock: a large blob's fsync must not hold up every other hosted lookup.
        flush(upload);
        boolean sharable = shared != null && flushed(shared);
        return commitFlushed(repo, upload, digest, size, sharable ? shared : null);
    }

    private synchronized Item commitFlushed(String repo, Path upload, Digest digest, long size, Path shared)
            throws IOException {
        Path target = StorageScan.fanOut(blobs, digest);
        boolean stored = exists("SELECT 1 FROM blob WHERE digest = ?", digest.toString());
        if (!stored) {
            long now = bytes.get();
            if (now + size > maxBytes) {
                throw new QuotaExceeded(now, size, maxBytes);
            }
            Files.createDirectories(target.getParent());
            if (!linked(shared, target, size)) {
                Files.move(upload, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            }
        }
        Files.deleteIfExists(upload);
        try {
            if (!stored) {
                try (PreparedStatement ins = db.prepareStatement("INSERT INTO blob VALUES(?, ?, ?, ?)")) {
                    ins.setString(1, digest.toString());
                    ins.setLong(2, size);
                    ins.setLong(3, clock.millis());
                    ins.setLong(4, thisRun); // the caller hashed it
                    ins.executeUpdate();
                }
            }
            link(repo, digest);
            db.commit();
        } catch (SQLException e) {
            rollback();
            throw io("commit a blob", e);
        }
        if (!stored) {
            bytes.addAndGet(size);
            blobCount.incrementAndGet();
        }
        return new Item(digest, size, target, null);
    }

    /**
     * Whether {@code shared} (the cache's copy) is flushed to the disk now: the cache does not flush
     * its files, and a hosted blob is the only copy. False when it cannot be (gone meanwhile).
     */
    private static boolean flushed(Path shared) {
        try {
            flush(shared);
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    /**
     * Whether {@code target} now names the bytes of {@code shared} (flushed by the caller). False,
     * nothing done, when there is none, it is not that size, or the file system cannot link (or it was
     * evicted meanwhile).
     */
    private static boolean linked(Path shared, Path target, long size) {
        if (shared == null) {
            return false;
        }
        try {
            if (Files.size(shared) != size) {
                return false;
            }
            Files.deleteIfExists(target); // a file a crash left without its row
            Files.createLink(target, shared);
            return true;
        } catch (IOException | UnsupportedOperationException e) {
            LOG.debug("hosted: cannot share {} with the cache ({}); the upload is kept instead", target, e.toString());
            return false;
        }
    }

    private static void flush(Path file) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.WRITE)) {
            ch.force(true);
        }
    }

    /** The file of a hosted blob, if any repository holds it (for the cache to share: same bytes, one copy). */
    public synchronized Optional<Path> storedBlob(Digest digest, long size) throws IOException {
        try (PreparedStatement q = db.prepareStatement("SELECT size FROM blob WHERE digest = ?")) {
            q.setString(1, digest.toString());
            try (ResultSet rs = q.executeQuery()) {
                Optional<Path> found = rs.next() && rs.getLong(1) == size
                        ? Optional.of(StorageScan.fanOut(blobs, digest)) : Optional.empty();
                db.commit();
                return found;
            }
        } catch (SQLException e) {
            throw io("look up a blob", e);
        }
    }

    /**
     * The cache's blob store, sharing files with this one: a blob the cache fetches that a hosted
     * repository holds is committed as a hard link to the hosted file (the downloaded copy is
     * dropped), so it is stored once. The cache may drop its link; the hosted file stays.
     */
    public BlobStore sharedWith(BlobStore cache) {
        return new SharedBlobStore(cache, this);
    }

    /**
     * Hashes a blob not {@link Item#verified() verified} since start. One whose file no longer matches
     * its digest (damaged on the disk) is removed, with its rows, so that it is never served and a
     * push of it stores it again; {@code false} then. Blocks: call it on a hashing thread.
     */
    public boolean verify(Item blob) throws IOException {
        Digest.FileCheck check;
        try {
            check = blob.digest().check(blob.path());
        } catch (NoSuchFileException e) {
            check = new Digest.FileCheck(-1, false);
        }
        long size = check.size();
        boolean good = size == blob.size() && check.matches();
        synchronized (this) {
            try {
                if (good) {
                    run("UPDATE blob SET verified = " + thisRun + " WHERE digest = ?", blob.digest().toString());
                    db.commit();
                    return true;
                }
                List<String> repos = new ArrayList<>();
                try (PreparedStatement q = db.prepareStatement("SELECT repo FROM repo_blob WHERE digest = ?")) {
                    q.setString(1, blob.digest().toString());
                    try (ResultSet rs = q.executeQuery()) {
                        while (rs.next()) {
                            repos.add(rs.getString(1));
                        }
                    }
                }
                int removed = run("DELETE FROM blob WHERE digest = ?", blob.digest().toString());
                db.commit();
                Files.deleteIfExists(blob.path());
                if (removed > 0) {
                    bytes.addAndGet(-blob.size());
                    blobCount.decrementAndGet();
                }
                LOG.error("hosted: blob {} is damaged on the disk ({} bytes there, {} expected, or other bytes);"
                        + " removed from {}: push it again to restore it", blob.digest(), size, blob.size(), repos);
                return false;
            } catch (SQLException e) {
                rollback();
                throw io("record a blob's check", e);
            }
        }
    }

    /**
     * A cross-repository mount: {@code to} holds the blob from now on if {@code from} holds it. False
     * (nothing changed) if it does not.
     */
    public synchronized Optional<Item> mount(String from, String to, Digest digest) throws IOException {
        Optional<Item> there = blob(from, digest);
        if (there.isEmpty()) {
            return there;
        }
        try {
            link(to, digest);
            db.commit();
        } catch (SQLException e) {
            rollback();
            throw io("mount a blob", e);
        }
        return there;
    }

    private void link(String repo, Digest digest) throws SQLException {
        try (PreparedStatement ins = db.prepareStatement("INSERT INTO repo_blob VALUES(?, ?, ?)"
                + " ON CONFLICT(repo, digest) DO UPDATE SET linked = excluded.linked")) {
            ins.setString(1, repo);
            ins.setString(2, digest.toString());
            ins.setLong(3, clock.millis());
            ins.executeUpdate();
        }
    }

    // ---------------------------------------------------------------- manifests and tags

    /** The manifest, if {@code repo} holds it. */
    public synchronized Optional<Item> manifest(String repo, Digest digest) throws IOException {
        try (PreparedStatement q = db.prepareStatement("SELECT m.media_type, m.size FROM repo_manifest r"
                + " JOIN manifest m ON m.digest = r.digest WHERE r.repo = ? AND r.digest = ?")) {
            q.setString(1, repo);
            q.setString(2, digest.toString());
            try (ResultSet rs = q.executeQuery()) {
                Optional<Item> found = rs.next() ? Optional.of(new Item(digest, rs.getLong(2),
                        StorageScan.fanOut(manifests, digest), rs.getString(1))) : Optional.empty();
                db.commit();
                return found;
            }
        } catch (SQLException e) {
            throw io("look up a manifest", e);
        }
    }

    /** The manifest {@code tag} of {@code repo} points at, if the tag exists. */
    public synchronized Optional<Item> tagged(String repo, String tag) throws IOException {
        try (PreparedStatement q = db.prepareStatement("SELECT m.digest, m.media_type, m.size FROM tag t"
                + " JOIN manifest m ON m.digest = t.digest WHERE t.repo = ? AND t.tag = ?")) {
            q.setString(1, repo);
            q.setString(2, tag);
            try (ResultSet rs = q.executeQuery()) {
                Optional<Item> found = Optional.empty();
                if (rs.next()) {
                    Digest d = Digest.parse(rs.getString(1));
                    found = Optional.of(new Item(d, rs.getLong(3), StorageScan.fanOut(manifests, d), rs.getString(2)));
                }
                db.commit();
                return found;
            }
        } catch (SQLException e) {
            throw io("look up a tag", e);
        }
    }

    /** A manifest's bytes (small: within the manifest size limit). */
    public byte[] read(Item manifest) throws IOException {
        return Files.readAllBytes(manifest.path());
    }

    /**
     * Stores a manifest in {@code repo}, and points {@code tag} at it (null: pushed by digest). In one
     * transaction it checks that the repository holds everything the manifest names, and commits; its
     * file is written (flushed) before. {@link MissingReference} or {@link QuotaExceeded}, with nothing
     * changed, otherwise.
     *
     * @return whether the repository did not hold the manifest before
     */
    public synchronized boolean putManifest(String repo, String tag, Digest digest, String mediaType, byte[] content,
                                            References refs) throws IOException {
        boolean stored = exists("SELECT 1 FROM manifest WHERE digest = ?", digest.toString());
        try {
            for (Digest b : refs.blobs()) {
                if (!exists("SELECT 1 FROM repo_blob WHERE repo = ? AND digest = ?", repo, b.toString())) {
                    throw new MissingReference(true, b);
                }
            }
            for (Digest m : refs.manifests()) {
                if (!exists("SELECT 1 FROM repo_manifest WHERE repo = ? AND digest = ?", repo, m.toString())) {
                    throw new MissingReference(false, m);
                }
            }
            if (!stored) {
                long now = bytes.get();
                if (now + content.length > maxBytes) {
                    throw new QuotaExceeded(now, content.length, maxBytes);
                }
                Path target = StorageScan.fanOut(manifests, digest);
                Files.createDirectories(target.getParent());
                if (!Files.exists(target)) {
                    Path temp = AtomicFiles.prepare(target, content, "hosted");
                    AtomicFiles.install(temp, target);
                }
                try (PreparedStatement ins = db.prepareStatement("INSERT INTO manifest VALUES(?, ?, ?, ?, ?, ?, ?)")) {
                    ins.setString(1, digest.toString());
                    ins.setString(2, mediaType);
                    ins.setLong(3, content.length);
                    ins.setString(4, refs.subject() == null ? null : refs.subject().toString());
                    ins.setString(5, refs.artifactType());
                    ins.setString(6, refs.annotations());
                    ins.setLong(7, clock.millis());
                    ins.executeUpdate();
                }
                try (PreparedStatement ins = db.prepareStatement("INSERT OR IGNORE INTO ref VALUES(?, ?, ?)")) {
                    for (Digest b : refs.blobs()) {
                        ins.setString(1, digest.toString());
                        ins.setInt(2, BLOB);
                        ins.setString(3, b.toString());
                        ins.executeUpdate();
                    }
                    for (Digest m : refs.manifests()) {
                        ins.setString(1, digest.toString());
                        ins.setInt(2, MANIFEST);
                        ins.setString(3, m.toString());
                        ins.executeUpdate();
                    }
                }
            }
            boolean added = !exists("SELECT 1 FROM repo_manifest WHERE repo = ? AND digest = ?", repo, digest.toString());
            if (added) {
                try (PreparedStatement ins = db.prepareStatement("INSERT INTO repo_manifest VALUES(?, ?)")) {
                    ins.setString(1, repo);
                    ins.setString(2, digest.toString());
                    ins.executeUpdate();
                }
            }
            if (tag != null) {
                try (PreparedStatement ins = db.prepareStatement("INSERT INTO tag VALUES(?, ?, ?)"
                        + " ON CONFLICT(repo, tag) DO UPDATE SET digest = excluded.digest")) {
                    ins.setString(1, repo);
                    ins.setString(2, tag);
                    ins.setString(3, digest.toString());
                    ins.executeUpdate();
                }
            }
            db.commit();
            if (!stored) {
                bytes.addAndGet(content.length);
                manifestCount.incrementAndGet();
            }
            return added;
        } catch (SQLException e) {
            rollback();
            throw io("store a manifest", e);
        } catch (IOException | RuntimeException e) {
            rollback();
            throw e;
        }
    }

    /**
     * Up to {@code n} tags of {@code repo} after {@code last} (null: from the first), in lexical order,
     * one more than asked when there are more. Empty if the repository has none.
     */
    public synchronized List<String> tags(String repo, String last, int n) throws IOException {
        try (PreparedStatement q = db.prepareStatement("SELECT tag FROM tag WHERE repo = ? AND tag > ?"
                + " ORDER BY tag LIMIT ?")) {
            q.setString(1, repo);
            q.setString(2, last == null ? "" : last);
            q.setLong(3, (long) n + 1);
            List<String> out = new ArrayList<>();
            try (ResultSet rs = q.executeQuery()) {
                while (rs.next()) {
                    out.add(rs.getString(1));
                }
            }
            db.commit();
            return out;
        } catch (SQLException e) {
            throw io("list tags", e);
        }
    }

    /** Whether {@code repo} holds anything (a blob, a manifest). */
    public synchronized boolean repositoryExists(String repo) throws IOException {
        boolean found = exists("SELECT 1 FROM repo_manifest WHERE repo = ? LIMIT 1", repo)
                || exists("SELECT 1 FROM repo_blob WHERE repo = ? LIMIT 1", repo);
        endRead();
        return found;
    }

    /** The manifests of {@code repo} whose subject is {@code subject}, optionally of one artifact type. */
    public synchronized List<Referrer> referrers(String repo, Digest subject, String artifactType) throws IOException {
        try (PreparedStatement q = db.prepareStatement("SELECT m.digest, m.media_type, m.size, m.artifact_type,"
                + " m.annotations FROM manifest m JOIN repo_manifest r ON r.digest = m.digest"
                + " WHERE r.repo = ? AND m.subject = ? AND (? IS NULL OR m.artifact_type = ?) ORDER BY m.digest")) {
            q.setString(1, repo);
            q.setString(2, subject.toString());
            q.setString(3, artifactType);
            q.setString(4, artifactType);
            List<Referrer> out = new ArrayList<>();
            try (ResultSet rs = q.executeQuery()) {
                while (rs.next()) {
                    out.add(new Referrer(Digest.parse(rs.getString(1)), rs.getString(2), rs.getLong(3),
                            rs.getString(4), rs.getString(5)));
                }
            }
            db.commit();
            return out;
        } catch (SQLException e) {
            throw io("list referrers", e);
        }
    }

    // ---------------------------------------------------------------- deletion and collection

    /** Removes a tag; false if {@code repo} has no such tag. The manifest stays (by digest). */
    public synchronized boolean deleteTag(String repo, String tag) throws IOException {
        return update("delete a tag", "DELETE FROM tag WHERE repo = ? AND tag = ?", repo, tag) > 0;
    }

    /**
     * Removes a manifest from {@code repo}, with the repository's tags that point at it; false if the
     * repository does not hold it. Its file goes with the next collection, unless another repository
     * holds it.
     */
    public synchronized boolean deleteManifest(String repo, Digest digest) throws IOException {
        try {
            int n = run("DELETE FROM repo_manifest WHERE repo = ? AND digest = ?", repo, digest.toString());
            run("DELETE FROM tag WHERE repo = ? AND digest = ?", repo, digest.toString());
            db.commit();
            return n > 0;
        } catch (SQLException e) {
            rollback();
            throw io("delete a manifest", e);
        }
    }

    /** Removes a blob from {@code repo}; false if it does not hold it. Its file goes with the next collection. */
    public synchronized boolean deleteBlob(String repo, Digest digest) throws IOException {
        return update("delete a blob", "DELETE FROM repo_blob WHERE repo = ? AND digest = ?", repo, digest.toString()) > 0;
    }

    /** What a collection removed. */
    public record Collected(long manifests, long blobs, long bytes, long strayFiles) {
    }

    /** Rows removed per transaction by a collection, so pushes wait for one batch at most. */
    static final int GC_BATCH = 500;

    /**
     * Online garbage collection: removes manifests no repository holds (and no held index names), then
     * blobs no remaining manifest names and that no repository received within {@code graceMillis}
     * (a blob uploaded for a manifest not yet pushed), then files a crash left without a row, older
     * than the grace. Runs beside pushes: each batch decides and deletes, rows and files, in one step
     * under this store's lock, so a manifest committed meanwhile either found its blobs (and keeps
     * them) or did not commit; and a blob pushed again after its row went gets a file of its own.
     */
    public Collected collect(long graceMillis) throws IOException {
        long cutoff = clock.millis() - graceMillis;
        long manifestsGone = 0;
        long blobsGone = 0;
        long bytesGone = 0;
        // Manifests: held by no repository and named by no held manifest (an index's children stay
        // while the index does). Deleting one can orphan its children: go round until none is left.
        while (true) {
            List<String> batch = select("SELECT m.digest FROM manifest m WHERE NOT EXISTS (SELECT 1 FROM repo_manifest r"
                    + " WHERE r.digest = m.digest) AND NOT EXISTS (SELECT 1 FROM ref f JOIN repo_manifest r"
                    + " ON r.digest = f.manifest WHERE f.kind = " + MANIFEST + " AND f.child = m.digest) LIMIT " + GC_BATCH);
            if (batch.isEmpty()) {
                break;
            }
            long[] freed = removeManifests(batch);
            manifestsGone += freed[0];
            bytesGone += freed[1];
        }
        while (true) {
            List<String> batch = select("SELECT b.digest FROM blob b WHERE NOT EXISTS (SELECT 1 FROM ref f"
                    + " WHERE f.kind = " + BLOB + " AND f.child = b.digest) AND NOT EXISTS (SELECT 1 FROM repo_blob r"
                    + " WHERE r.digest = b.digest AND r.linked >= " + cutoff + ") LIMIT " + GC_BATCH);
            if (batch.isEmpty()) {
                break;
            }
            long[] freed = removeBlobs(batch, cutoff);
            blobsGone += freed[0];
            bytesGone += freed[1];
            if (freed[0] == 0) {
                break; // every one of them was linked or named again meanwhile
            }
        }
        long stray = removeStrayFiles(blobs, "blob", cutoff) + removeStrayFiles(manifests, "manifest", cutoff);
        Collected c = new Collected(manifestsGone, blobsGone, bytesGone, stray);
        if (manifestsGone + blobsGone + stray > 0) {
            LOG.info("hosted: collection removed {} manifests and {} blobs ({} bytes), {} stray files", manifestsGone,
                    blobsGone, bytesGone, stray);
        }
        return c;
    }

    private synchronized List<String> select(String sql) throws IOException {
        try (Statement s = db.createStatement(); ResultSet rs = s.executeQuery(sql)) {
            List<String> out = new ArrayList<>();
            while (rs.next()) {
                out.add(rs.getString(1));
            }
            db.commit();
            return out;
        } catch (SQLException e) {
            throw io("collect", e);
        }
    }

    /** Removes manifests chosen by a collection, each if still unheld; yields {count, bytes}. */
    private synchronized long[] removeManifests(List<String> digests) throws IOException {
        long count = 0;
        long freed = 0;
        List<Path> files = new ArrayList<>();
        try {
            for (String d : digests) {
                boolean held = exists("SELECT 1 FROM repo_manifest WHERE digest = ?", d)
                        || exists("SELECT 1 FROM ref f JOIN repo_manifest r ON r.digest = f.manifest WHERE f.kind = "
                        + MANIFEST + " AND f.child = ?", d);
                long size = size("SELECT size FROM manifest WHERE digest = ?", d);
                if (held || size < 0) {
                    continue;
                }
                run("DELETE FROM manifest WHERE digest = ?", d);
                files.add(StorageScan.fanOut(manifests, Digest.parse(d)));
                count++;
                freed += size;
            }
            db.commit();
        } catch (SQLException e) {
            rollback();
            throw io("collect manifests", e);
        }
        for (Path f : files) {
            Files.deleteIfExists(f);
        }
        manifestCount.addAndGet(-count);
        bytes.addAndGet(-freed);
        return new long[] {count, freed};
    }

    /** Removes blobs chosen by a collection, each if still unnamed and not linked since {@code cutoff}; yields {count, bytes}. */
    private synchronized long[] removeBlobs(List<String> digests, long cutoff) throws IOException {
        long count = 0;
        long freed = 0;
        List<Path> files = new ArrayList<>();
        try {
            for (String d : digests) {
                boolean kept = exists("SELECT 1 FROM ref WHERE kind = " + BLOB + " AND child = ?", d)
                        || exists("SELECT 1 FROM repo_blob WHERE digest = ? AND linked >= " + cutoff, d);
                long size = size("SELECT size FROM blob WHERE digest = ?", d);
                if (kept || size < 0) {
                    continue;
                }
                run("DELETE FROM blob WHERE digest = ?", d); // its repositories' rows go with it
                files.add(StorageScan.fanOut(blobs, Digest.parse(d)));
                count++;
                freed += size;
            }
            db.commit();
        } catch (SQLException e) {
            rollback();
            throw io("collect blobs", e);
        }
        // Still under the lock: a push of the same digest waits, then finds no row and moves in a file of its own.
        for (Path f : files) {
            Files.deleteIfExists(f);
        }
        blobCount.addAndGet(-count);
        bytes.addAndGet(-freed);
        return new long[] {count, freed};
    }

    /**
     * Deletes files under {@code folder} that have no row in {@code table} and were last changed before
     * {@code cutoff}.
     */
    private long removeStrayFiles(Path folder, String table, long cutoff) throws IOException {
        List<Path> candidates = new ArrayList<>();
        try (Stream<Path> walk = Files.walk(folder, 3)) {
            walk.filter(Files::isRegularFile).forEach(candidates::add);
        }
        long removed = 0;
        for (Path p : candidates) {
            String name = p.getFileName().toString();
            String algorithm = p.getParent().getParent().getFileName().toString();
            String text = algorithm + ":" + name;
            synchronized (this) {
                if (Digest.isValid(text) && exists("SELECT 1 FROM " + table + " WHERE digest = ?", text)) {
                    endRead();
                    continue;
                }
                endRead();
                if (Files.getLastModifiedTime(p).toMillis() < cutoff) {
                    Files.deleteIfExists(p);
                    removed++;
                }
            }
        }
        return removed;
    }

    private long size(String sql, String digest) throws SQLException {
        try (PreparedStatement q = db.prepareStatement(sql)) {
            q.setString(1, digest);
            try (ResultSet rs = q.executeQuery()) {
                return rs.next() ? rs.getLong(1) : -1;
            }
        }
    }

    private int run(String sql, String... args) throws SQLException {
        try (PreparedStatement q = db.prepareStatement(sql)) {
            for (int i = 0; i < args.length; i++) {
                q.setString(i + 1, args[i]);
            }
            return q.executeUpdate();
        }
    }

    private int update(String what, String sql, String... args) throws IOException {
        try {
            int n = run(sql, args);
            db.commit();
            return n;
        } catch (SQLException e) {
            rollback();
            throw io(what, e);
        }
    }

    /** Each hosted repository with the number of its tags and manifests, by name (for operators). */
    public record Repository(String name, long tags, long manifests) {
    }

    /** Every hosted repository that holds a manifest, by name. */
    public synchronized List<Repository> repositories() throws IOException {
        try (Statement s = db.createStatement(); ResultSet rs = s.executeQuery("SELECT r.repo, (SELECT count(*) FROM tag t"
                + " WHERE t.repo = r.repo), count(*) FROM repo_manifest r GROUP BY r.repo ORDER BY r.repo")) {
            List<Repository> out = new ArrayList<>();
            while (rs.next()) {
                out.add(new Repository(rs.getString(1), rs.getLong(2), rs.getLong(3)));
            }
            db.commit();
            return out;
        } catch (SQLException e) {
            throw io("list repositories", e);
        }
    }

    // ---------------------------------------------------------------- helpers

    private boolean exists(String sql, String... args) throws IOException {
        try (PreparedStatement q = db.prepareStatement(sql)) {
            for (int i = 0; i < args.length; i++) {
                q.setString(i + 1, args[i]);
            }
            try (ResultSet rs = q.executeQuery()) {
                return rs.next();
            }
        } catch (SQLException e) {
            throw io("read the database", e);
        }
    }

    /** Ends the read transaction a lookup began (an open one would keep the log from being checkpointed). */
    private void endRead() throws IOException {
        try {
            db.commit();
        } catch (SQLException e) {
            throw io("read the database", e);
        }
    }

    private void rollback() {
        try {
            db.rollback();
        } catch (SQLException e) {
            LOG.warn("hosted: rollback failed: {}", e.getMessage());
        }
    }

    private IOException io(String what, SQLException e) {
        return new IOException("hosted repositories: cannot " + what + ": " + e.getMessage(), e);
    }

    @Override
    public synchronized void close() {
        try {
            db.close();
        } catch (SQLException e) {
            LOG.warn("hosted: closing the database failed: {}", e.getMessage());
        }
    }
}
