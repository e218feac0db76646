package dev.registrymirror.cache;

import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * The connections lookups read the index with, all opened at the start: a fixed number of file
 * descriptors and page caches. SQLite's write-ahead log lets them read while the writer writes, so a
 * lookup never waits for eviction; a lookup takes about 10 µs, so a few serve every worker thread.
 */
final class ReaderPool implements AutoCloseable {
    /** Connections for lookups. */
    static final int READERS = 8;

    /** A connection for lookups, with its statements; used by one thread at a time. */
    static final class Reader {
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

    /** Work with a reader connection, which may fail as JDBC does. */
    @FunctionalInterface
    interface Work<T> {
        T run(Reader reader) throws SQLException;
    }

    private final LinkedBlockingQueue<Reader> free = new LinkedBlockingQueue<>();
    private final List<Reader> all = new ArrayList<>();
    private volatile boolean closed;

    /** Opens {@value #READERS} connections to the index in {@code file}. */
    ReaderPool(Path file) throws SQLException {
        try {
            for (int i = 0; i < READERS; i++) {
                Reader reader = new Reader(IndexDatabase.connect(file, 2 << 10));
                all.add(reader);
                free.add(reader);
            }
        } catch (SQLException | RuntimeException e) {
            close();
            throw e;
        }
    }

    /** Runs {@code work} with a reader connection, waiting for one if all are in use (for microseconds). */
    <T> T read(Work<T> work) throws SQLException {
        Reader r;
        try {
            r = closed ? null : free.poll(30, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new SQLException("interrupted while waiting for a reader connection", e);
        }
        if (r == null) {
            throw new SQLException(closed ? "the cache index is closed" : "no reader connection free for 30 s");
        }
        try {
            return work.run(r);
        } finally {
            free.add(r);
        }
    }

    @Override
    public void close() {
        closed = true;
        synchronized (all) {
            for (Reader r : all) {
                try {
                    r.connection.close();
                } catch (SQLException e) {
                    // closing anyway
                }
            }
            all.clear();
        }
        free.clear();
    }
}
