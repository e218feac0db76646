package dev.registrymirror.cache;

import java.io.IOException;
import java.util.Optional;

/**
 * Manifests by digest: immutable. Small, so they are held whole; recently used ones also stay in
 * memory. They leave the disk only when the storage's limits evict them.
 */
public interface ManifestStore {

    /** The manifest if it is in memory; never touches the disk, so it is safe on an event loop. */
    Optional<Manifest> cached(Digest digest);

    /** The manifest from memory or disk. A file whose bytes do not match the digest is dropped. Blocks. */
    Optional<Manifest> find(Digest digest) throws IOException;

    /**
     * Stores a manifest; its bytes must match its digest. {@code origin}, when not null, is the
     * {@code <upstream>/<repository>} it was fetched for, recorded with it (also when it was stored
     * already). Blocks.
     */
    void put(Manifest manifest, String origin) throws IOException;

    /** {@link #put(Manifest, String)} without an origin. */
    default void put(Manifest manifest) throws IOException {
        put(manifest, null);
    }

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
