package dev.registrymirror.cache;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.Optional;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Stream;

/**
 * {@link BlobStore} as files: {@code blobs/<algorithm>/<first two hex>/<hex>} under the root, and
 * temporary files in {@code tmp/} on the same file system.
 *
 * <p>Implementation note: {@link #commit} hard-links the temporary file to its final name. The link
 * is atomic and fails if the name exists, so a committed file is never replaced, and readers that
 * opened the temporary file by name keep working until it is discarded.
 */
final class FileBlobStore implements BlobStore {
    private final Path blobs;
    private final Path tmp;
    private final AtomicLong storedBytes = new AtomicLong();

    private FileBlobStore(Path root) {
        this.blobs = root.resolve("blobs");
        this.tmp = root.resolve("tmp");
    }

    static FileBlobStore open(Path root) throws IOException {
        FileBlobStore store = new FileBlobStore(root);
        Files.createDirectories(store.blobs);
        Files.createDirectories(store.tmp);
        try (Stream<Path> leftovers = Files.list(store.tmp)) {
            for (Path p : (Iterable<Path>) leftovers::iterator) {
                Files.deleteIfExists(p);
            }
        }
        store.storedBytes.set(DiskUsage.bytesUnder(store.blobs, p -> true));
        return store;
    }

    Path pathOf(Digest digest) {
        return blobs.resolve(digest.algorithm()).resolve(digest.hex().substring(0, 2)).resolve(digest.hex());
    }

    @Override
    public Optional<Blob> find(Digest digest) throws IOException {
        Path p = pathOf(digest);
        try {
            BasicFileAttributes a = Files.readAttributes(p, BasicFileAttributes.class);
            return a.isRegularFile() ? Optional.of(new Blob(digest, p, a.size())) : Optional.empty();
        } catch (NoSuchFileException e) {
            return Optional.empty();
        }
    }

    @Override
    public Path newTempFile() throws IOException {
        return Files.createTempFile(tmp, "blob-", ".part");
    }

    @Override
    public Blob commit(Path temp, Digest digest, long size) throws IOException {
        long actual = Files.size(temp);
        if (actual != size) {
            throw new IOException("temporary file holds " + actual + " bytes, expected " + size);
        }
        try (FileChannel ch = FileChannel.open(temp, StandardOpenOption.WRITE)) {
            ch.force(true);
        }
        Path target = pathOf(digest);
        Files.createDirectories(target.getParent());
        try {
            Files.createLink(target, temp);
            storedBytes.addAndGet(size);
        } catch (FileAlreadyExistsException e) {
            // Committed concurrently or earlier: same digest, same bytes.
        } catch (UnsupportedOperationException e) {
            Path copy = Files.createTempFile(tmp, "blob-", ".copy");
            Files.copy(temp, copy, StandardCopyOption.REPLACE_EXISTING);
            try {
                Files.move(copy, target, StandardCopyOption.ATOMIC_MOVE);
                storedBytes.addAndGet(size);
            } catch (AtomicMoveNotSupportedException ex) {
                Files.deleteIfExists(copy);
                throw ex;
            }
        }
        return new Blob(digest, target, size);
    }

    @Override
    public void discard(Path temp) {
        try {
            Files.deleteIfExists(temp);
        } catch (IOException e) {
            // Removed at the next start.
        }
    }

    @Override
    public long storedBytes() {
        return storedBytes.get();
    }
}
