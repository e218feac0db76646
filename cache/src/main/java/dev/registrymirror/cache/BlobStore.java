package dev.registrymirror.cache;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Optional;

/**
 * Blobs on local disk, addressed by digest. A blob becomes visible only through {@link #commit},
 * after its bytes were written to a temporary file and verified by the caller.
 *
 * <p>Every method may touch the disk and so blocks, except {@link #release}: call them from a
 * worker thread, not an event loop.
 */
public interface BlobStore {

    /** The committed blob with this digest, if stored; counts as a use. */
    Optional<Blob> find(Digest digest) throws IOException;

    /**
     * Like {@link #find}, and the blob's file is not evicted until {@link #release}: use it while the
     * file is being sent.
     */
    Optional<Blob> acquire(Digest digest) throws IOException;

    /**
     * Whether the blob was committed moments ago, answered from memory: never blocks, safe on an event
     * loop. For a request that looked it up just before it was committed; false does not mean absent.
     */
    default boolean knownPresent(Digest digest) {
        return false;
    }

    /**
     * Whether the blob may be stored, answered from memory: never blocks, safe on an event loop. False
     * means it certainly is not, so a miss needs no {@link #acquire}; true means "look it up".
     */
    default boolean mayHold(Digest digest) {
        return true;
    }

    /** Ends an {@link #acquire}. Never blocks. */
    void release(Blob blob);

    /**
     * Hashes a blob not {@link Blob#verified() verified} since start. A blob whose bytes do not match
     * its digest is deleted and forgotten; the answer is then {@code false}.
     */
    boolean verify(Blob blob) throws IOException;

    /** Forgets a blob whose file turned out to be missing (deleted by hand, say). */
    void forget(Blob blob) throws IOException;

    /** A new, empty temporary file on the same file system as the store. */
    Path newTempFile() throws IOException;

    /**
     * Makes a verified temporary file the stored blob for {@code digest}. The temporary file stays
     * where it is (readers may still hold it open); delete it with {@link #discard} when done.
     *
     * @param size   the verified length, checked against the file
     * @param origin the {@code <upstream>/<repository>} it was fetched for, recorded with it (see
     *               {@link Storage#origins}); null to record none
     */
    Blob commit(Path temp, Digest digest, long size, String origin) throws IOException;

    /** {@link #commit(Path, Digest, long, String)} without an origin. */
    default Blob commit(Path temp, Digest digest, long size) throws IOException {
        return commit(temp, digest, size, null);
    }

    /** Deletes a temporary file; quiet if it is gone. */
    void discard(Path temp);

    /** Bytes held by committed blobs. */
    long storedBytes();

    /** Bytes the file system still has free for the store. */
    long usableSpace() throws IOException;

    /** A stored blob. */
    final class Blob {
        private final Digest digest;
        private final Path path;
        private final long size;
        private final boolean verified;
        final CacheIndex.Key pinned;

        Blob(Digest digest, Path path, long size, boolean verified, CacheIndex.Key pinned) {
            this.digest = digest;
            this.path = path;
            this.size = size;
            this.verified = verified;
            this.pinned = pinned;
        }

        public Digest digest() {
            return digest;
        }

        public Path path() {
            return path;
        }

        public long size() {
            return size;
        }

        /** Whether its bytes are known to match its digest: written by this process, or hashed since start. */
        public boolean verified() {
            return verified;
        }
    }
}
