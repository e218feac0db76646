package dev.registrymirror.cache;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Optional;

/**
 * A blob store that passes every call to another: a store that changes a few calls extends it
 * ({@link SharedBlobStore}; tests make calls misbehave this way).
 */
public abstract class ForwardingBlobStore implements BlobStore {
    protected final BlobStore real;

    protected ForwardingBlobStore(BlobStore real) {
        this.real = real;
    }

    @Override
    public Optional<Blob> find(Digest digest) throws IOException {
        return real.find(digest);
    }

    @Override
    public Optional<Blob> acquire(Digest digest) throws IOException {
        return real.acquire(digest);
    }

    @Override
    public boolean knownPresent(Digest digest) {
        return real.knownPresent(digest);
    }

    @Override
    public boolean mayHold(Digest digest) {
        return real.mayHold(digest);
    }

    @Override
    public void release(Blob blob) {
        real.release(blob);
    }

    @Override
    public boolean verify(Blob blob) throws IOException {
        return real.verify(blob);
    }

    @Override
    public void forget(Blob blob) throws IOException {
        real.forget(blob);
    }

    @Override
    public Path newTempFile() throws IOException {
        return real.newTempFile();
    }

    @Override
    public Blob commit(Path temp, Digest digest, long size, String origin) throws IOException {
        return real.commit(temp, digest, size, origin);
    }

    @Override
    public void discard(Path temp) {
        real.discard(temp);
    }

    @Override
    public long storedBytes() {
        return real.storedBytes();
    }

    @Override
    public long usableSpace() throws IOException {
        return real.usableSpace();
    }
}
