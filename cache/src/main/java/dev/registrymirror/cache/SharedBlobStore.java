package dev.registrymirror.cache;

import java.io.IOException;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.Optional;

/**
 * The cache's blob store, committing a blob that hosted repositories hold as a link to their file
 * (see {@link HostedStore#sharedWith}). Everything else is the cache's own.
 */
final class SharedBlobStore implements BlobStore {
    private final BlobStore cache;
    private final HostedStore hosted;

    SharedBlobStore(BlobStore cache, HostedStore hosted) {
        this.cache = cache;
        this.hosted = hosted;
    }

    @Override
    public Blob commit(Path temp, Digest digest, long size, String origin) throws IOException {
        Optional<Path> same = hosted.storedBlob(digest, size);
        if (same.isPresent()) {
            try {
                return cache.commit(same.get(), digest, size, origin);
            } catch (NoSuchFileException e) {
                // Collected meanwhile: the downloaded copy it is.
            }
        }
        return cache.commit(temp, digest, size, origin);
    }

    @Override
    public Optional<Blob> find(Digest digest) throws IOException {
        return cache.find(digest);
    }

    @Override
    public Optional<Blob> acquire(Digest digest) throws IOException {
        return cache.acquire(digest);
    }

    @Override
    public boolean knownPresent(Digest digest) {
        return cache.knownPresent(digest);
    }

    @Override
    public boolean mayHold(Digest digest) {
        return cache.mayHold(digest);
    }

    @Override
    public void release(Blob blob) {
        cache.release(blob);
    }

    @Override
    public boolean verify(Blob blob) throws IOException {
        return cache.verify(blob);
    }

    @Override
    public void forget(Blob blob) throws IOException {
        cache.forget(blob);
    }

    @Override
    public Path newTempFile() throws IOException {
        return cache.newTempFile();
    }

    @Override
    public void discard(Path temp) {
        cache.discard(temp);
    }

    @Override
    public long storedBytes() {
        return cache.storedBytes();
    }

    @Override
    public long usableSpace() throws IOException {
        return cache.usableSpace();
    }
}
