package dev.registrymirror.cache;

import java.util.concurrent.atomic.AtomicLongArray;

/**
 * Which blobs may be stored, answered from memory: {@link #mightContain} false means certainly not
 * stored, so a request for a blob the cache does not have can go on to the upstream without a lookup
 * in the index database (a hop to a worker thread and back, on the way to every cold pull's first
 * byte). A Bloom filter over the digests: items are added before their row is written and never taken
 * out (an evicted item stays a "maybe", which the lookup then answers), so it has no false negatives.
 *
 * <p>Written by hand: a digest is already a uniformly random number, so the filter's bit positions are
 * read from the digest itself (five 32-bit words of it), where a library's filter (Guava's) would
 * hash them again, for a dependency of 3 MB.
 */
final class Presence {
    private static final int PROBES = 5;
    /** Bytes of digest the probes read; a shorter digest (none is) would always be a "maybe". */
    private static final int NEEDED = 4 * PROBES;

    private final AtomicLongArray words;
    private final int mask;

    /** A filter for about {@code expected} items: 16 bits each (one false "maybe" in 700), within 2^23–2^27 bits. */
    Presence(long expected) {
        long wanted = Math.max(1L << 23, Math.min(1L << 27, Long.highestOneBit(Math.max(1, expected * 16)) << 1));
        this.words = new AtomicLongArray((int) (wanted >>> 6));
        this.mask = (int) (wanted - 1);
    }

    /** Bits in the filter. */
    long size() {
        return (long) words.length() << 6;
    }

    void add(byte[] digest) {
        if (digest.length < NEEDED) {
            return;
        }
        for (int i = 0; i < PROBES; i++) {
            int bit = probe(digest, i);
            long m = 1L << (bit & 63);
            words.accumulateAndGet(bit >>> 6, m, (a, b) -> a | b);
        }
    }

    boolean mightContain(byte[] digest) {
        if (digest.length < NEEDED) {
            return true;
        }
        for (int i = 0; i < PROBES; i++) {
            int bit = probe(digest, i);
            if ((words.get(bit >>> 6) & (1L << (bit & 63))) == 0) {
                return false;
            }
        }
        return true;
    }

    private int probe(byte[] d, int i) {
        int o = 4 * i;
        int word = (d[o] & 0xff) << 24 | (d[o + 1] & 0xff) << 16 | (d[o + 2] & 0xff) << 8 | (d[o + 3] & 0xff);
        return word & mask;
    }
}
