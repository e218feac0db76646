package dev.registrymirror.cache;

import java.io.IOException;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.Optional;

/**
 * The cache's blob store, committing a blob that hosted repositories hold as a link to their file
 * (see {@link HostedStore#sharedWith}). Everything else is the cache's own.
 */
final class SharedBlobStore extends ForwardingBlobStore {
    private final HostedStore hosted;

    SharedBlobStore(BlobStore cache, HostedStore hosted) {
        super(cache);
        this.hosted = hosted;
    }

    @Override
    public Blob commit(Path temp, Digest digest, long size, String origin) throws IOException {
        Optional<Path> same = hosted.storedBlob(digest, size);
        if (same.isPresent()) {
            try {
                return real.commit(same.get(), digest, size, origin);
            } catch (NoSuchFileException e) {
                // Collected meanwhile: the downloaded copy it is.
            }
        }
        return real.commit(temp, digest, size, origin);
    }
}
