package dev.registrymirror.cache;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.sqlite.SQLiteConfig;
import org.sqlite.SQLiteErrorCode;

/**
 * The index's database as a file: SQLite's native library, the schema and its version, the
 * connection settings. A file that is not a readable index of this version is set aside (logged) and
 * a new one made: the disk is the truth, and the reconciliation indexes it again.
 *
 * <p>The tables: {@code meta} (schema version, this start's number, whether the last stop was clean),
 * {@code item} (kind, digest, size, last use, the start that last hashed it), {@code totals} (items
 * and bytes per kind, kept by triggers), {@code origin} (the names an item was fetched for or
 * confirmed under; rows go with their item).
 */
final class IndexDatabase {
    private static final Logger LOG = LoggerFactory.getLogger(IndexDatabase.class);
    static final int SCHEMA = 1;

    /** Makes what uses a freshly opened database. */
    @FunctionalInterface
    interface Opener<T> {
        T open(Connection writer, boolean created) throws SQLException;
    }

    private IndexDatabase() {
    }

    /**
     * Opens the index in {@code file}, creating it if it does not exist. A file that is not a readable
     * index of this version is set aside (logged) and a new one is made: the disk is the truth, and the
     * reconciliation indexes it again.
     *
     * @param opener makes what uses the database of its writer connection (its reads may fail as a bad
     *               file does, which counts as unreadable too)
     */
    static <T> T open(Path file, Opener<T> opener) throws IOException {
        loadDriver(file.getParent());
        try {
            return openOnce(file, opener);
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
                return openOnce(file, opener);
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
        synchronized (IndexDatabase.class) {
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

    private static <T> T openOnce(Path file, Opener<T> opener) throws SQLException {
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
            return opener.open(c, created);
        } catch (SQLException | RuntimeException e) {
            c.close();
            throw e;
        }
    }

    static Connection connect(Path file, int cacheKib) throws SQLException {
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
}
