package dev.registrymirror.cache;

import java.io.IOException;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.List;
import java.util.Set;

/**
 * Making the index agree with the disk after a stop that was not clean (or on a folder filled before
 * there was an index): {@link StorageScan} walks one fan-out folder at a time, asks which digests have
 * rows there ({@link #rowsUnder}), adds rows for files without one ({@link #load}) and forgets rows
 * without a file. Items removed while it runs are remembered, so that a file it listed before it went
 * is not added back. Until it ends, nothing is evicted ({@link CacheIndex#maintain}).
 */
final class Reconciliation {
    private final CacheIndex index;
    private final Object lock = new Object();
    /** Keys removed since it began; null when none runs (guarded by {@link #lock}). */
    private Set<CacheIndex.Key> removedMeanwhile = new HashSet<>();

    Reconciliation(CacheIndex index) {
        this.index = index;
    }

    /** From now until {@link #end}, removals are remembered. */
    void begin() {
        synchronized (lock) {
            if (removedMeanwhile == null) {
                removedMeanwhile = new HashSet<>();
            }
        }
    }

    void end() {
        synchronized (lock) {
            removedMeanwhile = null;
        }
    }

    /** An item was added: should it have been removed meanwhile, it is back. */
    void added(CacheIndex.Key key) {
        synchronized (lock) {
            if (removedMeanwhile != null) {
                removedMeanwhile.remove(key);
            }
        }
    }

    void removed(CacheIndex.Key key) {
        synchronized (lock) {
            if (removedMeanwhile != null) {
                removedMeanwhile.add(key);
            }
        }
    }

    /**
     * Adds rows for files found without one, in one transaction, leaving out items removed since the
     * reconciliation began (their files may have been listed before they went). Yields how many were added.
     */
    int load(List<CacheIndex.Scanned> found) throws IOException {
        if (found.isEmpty()) {
            return 0;
        }
        synchronized (lock) {
            return index.insertFound(found, removedMeanwhile);
        }
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
            index.readers().read(r -> {
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
                return null;
            });
        } catch (SQLException e) {
            throw index.failure("list " + kind.label() + "s under " + algorithm + "/" + prefix + " in", e);
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
}
