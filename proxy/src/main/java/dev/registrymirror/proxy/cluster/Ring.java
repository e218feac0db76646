package dev.registrymirror.proxy.cluster;

import java.net.URI;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/**
 * Who owns a piece of content: rendezvous (highest random weight) hashing over the live members.
 * Each member scores each key; the highest scores own it, in order. When a member joins or leaves,
 * only the keys it wins or held move (about 1/N of them), unlike {@code hash mod N}, which moves most.
 * Every replica computes the same answer from the same members, with no coordination.
 *
 * <p>Written by hand: the algorithm is a few lines, and the libraries that have it (Guava's
 * {@code Hashing}, which has consistent hashing but not rendezvous) would be a dependency for one method.
 * The score is the first 8 bytes of SHA-256 of the member and the key: well spread, and the same on
 * every JVM.
 */
public final class Ring {
    private Ring() {
    }

    /** The {@code copies} members that own {@code key}, the owner first; all of them when there are fewer. */
    public static List<URI> owners(List<URI> members, String key, int copies) {
        List<Scored> scored = new ArrayList<>(members.size());
        for (URI m : members) {
            scored.add(new Scored(m, score(m, key)));
        }
        scored.sort(Comparator.comparingLong(Scored::score).reversed().thenComparing(s -> s.member().toString()));
        List<URI> owners = new ArrayList<>(Math.min(copies, scored.size()));
        for (int i = 0; i < scored.size() && i < copies; i++) {
            owners.add(scored.get(i).member());
        }
        return owners;
    }

    private record Scored(URI member, long score) {
    }

    static long score(URI member, String key) {
        try {
            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            sha.update(member.toString().getBytes(StandardCharsets.UTF_8));
            sha.update((byte) '\n');
            sha.update(key.getBytes(StandardCharsets.UTF_8));
            return ByteBuffer.wrap(sha.digest()).getLong();
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("every JVM has SHA-256", e);
        }
    }
}
