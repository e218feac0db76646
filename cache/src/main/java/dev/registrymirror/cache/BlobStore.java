package dev.registrymirror.cache;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Optional;

/**
 * Blobs on local disk, addressed by digest. A blob becomes visible only through {@link #commit},
 * after its bytes were written to a temporary file and verified by the caller.
 *
 * <p>Every method may touch the disk and so blocks: call it from a worker thread, not an event loop.
 */
public interface BlobStore {

    /** Opens (creating if needed) a store under {@code root}; leftover temporary files are removed. */
    static BlobStore open(Path root) throws IOException {
        return FileBlobStore.open(root);
    }

    /** The committed blob with this digest, if stored. */
    Optional<Blob> find(Digest digest) throws IOException;

    /** A new, empty temporary file on the same file system as the store. */
    Path newTempFile() throws IOException;

    /**
     * Makes a verified temporary file the stored blob for {@code digest}. The temporary file stays
     * where it is (readers may still hold it open); delete it with {@link #discard} when done.
     *
     * @param size the verified length, checked against the file
     */
    Blob commit(Path temp, Digest digest, long size) throws IOException;

    /** Deletes a temporary file; quiet if it is gone. */
    void discard(Path temp);

    /** Bytes held by committed blobs. */
    long storedBytes();

    /** A stored blob. */
    record Blob(Digest digest, Path path, long size) {
    }
}
