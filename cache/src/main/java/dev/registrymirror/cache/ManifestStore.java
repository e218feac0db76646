package dev.registrymirror.cache;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Optional;

/**
 * Manifests by digest: immutable, kept forever. Small, so they are held whole; recently used ones
 * also stay in memory.
 */
public interface ManifestStore {

    /** Opens (creating if needed) a store under {@code root}. */
    static ManifestStore open(Path root, long memoryBytes) throws IOException {
        return FileManifestStore.open(root, memoryBytes);
    }

    /** The manifest if it is in memory; never touches the disk, so it is safe on an event loop. */
    Optional<Manifest> cached(Digest digest);

    /** The manifest from memory or disk. A file whose bytes do not match the digest is dropped. Blocks. */
    Optional<Manifest> find(Digest digest) throws IOException;

    /** Stores a manifest; its bytes must match its digest. Blocks. */
    void put(Manifest manifest) throws IOException;

    /** Bytes held on disk by manifests. */
    long storedBytes();

    /** A manifest's exact bytes and media type. */
    record Manifest(Digest digest, String mediaType, byte[] bytes) {
        public Manifest {
            if (!Digest.of(digest.algorithm(), bytes).equals(digest)) {
                throw new IllegalArgumentException("manifest bytes do not match " + digest);
            }
        }
    }
}
