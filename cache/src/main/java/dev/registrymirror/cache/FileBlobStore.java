package dev.registrymirror.cache;

import dev.registrymirror.cache.CacheIndex.Entry;
import dev.registrymirror.cache.CacheIndex.Key;
import java.io.IOException;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.Optional;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@link BlobStore} as files: {@code blobs/<algorithm>/<first two hex>/<hex>} under the root, and
 * temporary files in {@code tmp/} on the same file system.
 *
 * <p>Implementation note: {@link #commit} hard-links the temporary file to its final name. The link
 * is atomic and fails if the name exists, so a committed file is never replaced, and readers that
 * opened the temporary file by name keep working until it is discarded. Files appear and disappear
 * only while the {@link CacheIndex#lockFor item's lock} is held, and a commit records the blob in the
 * index before its file appears, so the index never lacks a file. Commits do not wait for the disk
 * (no fsync): blobs are hashed again on their first read after a start.
 */
final class FileBlobStore implements BlobStore, StorageScan.ContentFolder {
    private static final Logger LOG = LoggerFactory.getLogger(FileBlobStore.class);

    private final Path blobs;
    private final Path tmp;
    private final CacheIndex index;
    private final StorageEvents events;
    private final Runnable grew;
    private final Storage.FreeSpace space;

    /**
     * @param grew  called after each commit (the store may be over its limits now)
     * @param space the usable space on the cache's filesystem
     */
    FileBlobStore(Path root, CacheIndex index, StorageEvents events, Runnable grew, Storage.FreeSpace space)
            throws IOException {
        this.blobs = root.resolve("blobs");
        this.tmp = root.resolve("tmp");
        this.index = index;
        this.events = events;
        this.grew = grew;
        this.space = space;
        Files.createDirectories(blobs);
        Files.createDirectories(tmp);
        index.deleter(ContentKind.BLOB, d -> Files.deleteIfExists(pathOf(d)));
    }

    Path pathOf(Digest digest) {
        return StorageScan.fanOut(blobs, digest);
    }

    @Override
    public ContentKind kind() {
        return ContentKind.BLOB;
    }

    @Override
    public Path folder() {
        return blobs;
    }

    @Override
    public boolean forgetIfMissing(Digest digest) throws IOException {
        Key key = new Key(ContentKind.BLOB, digest);
        synchronized (index.lockFor(key)) {
            if (!Files.exists(pathOf(digest))) {
                index.remove(key);
                return true;
            }
            return false;
        }
    }

    @Override
    public void otherFile(Path file) {
        // not the mirror's: left alone
    }

    @Override
    public Optional<Blob> find(Digest digest) throws IOException {
        return find(digest, false);
    }

    @Override
    public boolean mayHold(Digest digest) {
        return index.mayHold(new Key(ContentKind.BLOB, digest));
    }

    @Override
    public boolean knownPresent(Digest digest) {
        return index.knownPresent(new Key(ContentKind.BLOB, digest));
    }

    @Override
    public Optional<Blob> acquire(Digest digest) throws IOException {
        return find(digest, true);
    }

    private Optional<Blob> find(Digest digest, boolean pin) throws IOException {
        Key key = new Key(ContentKind.BLOB, digest);
        Path p = pathOf(digest);
        Entry e = pin ? index.pin(key) : index.lookup(key);
        if (e == null && !index.complete()) {
            // The reconciliation has not reached it yet: the disk decides.
            synchronized (index.lockFor(key)) {
                BasicFileAttributes a;
                try {
                    a = Files.readAttributes(p, BasicFileAttributes.class);
                } catch (NoSuchFileException ex) {
                    return Optional.empty();
                }
                if (!a.isRegularFile()) {
                    return Optional.empty();
                }
                index.add(key, a.size(), index.now(), false);
                e = pin ? index.pin(key) : index.lookup(key);
            }
        }
        if (e == null) {
            return Optional.empty();
        }
        return Optional.of(new Blob(digest, p, e.size(), e.verified(), pin ? key : null));
    }

    @Override
    public void release(Blob blob) {
        if (blob.pinned != null) {
            index.unpin(blob.pinned);
        }
    }

    @Override
    public boolean verify(Blob blob) throws IOException {
        Digest.FileCheck check;
        try {
            check = blob.digest().check(blob.path());
        } catch (NoSuchFileException e) {
            forget(blob);
            return false;
        }
        long size = check.size();
        Key key = new Key(ContentKind.BLOB, blob.digest());
        if (size == blob.size() && check.matches()) {
            index.verified(key);
            return true;
        }
        LOG.warn("stored blob {} does not match its digest ({} bytes on disk); dropped", blob.digest(), size);
        synchronized (index.lockFor(key)) {
            Files.deleteIfExists(blob.path());
            index.remove(key);
        }
        events.corruptDropped(ContentKind.BLOB.label());
        return false;
    }

    @Override
    public void forget(Blob blob) throws IOException {
        forgetIfMissing(blob.digest());
    }

    @Override
    public Path newTempFile() throws IOException {
        return Files.createTempFile(tmp, "blob-", ".part");
    }

    /**
     * Deletes a blob and its row (an operator's removal): true if either was there. A client being
     * sent it keeps its open file; the next request downloads it again. Blocks.
     */
    boolean remove(Digest digest) throws IOException {
        Key key = new Key(ContentKind.BLOB, digest);
        synchronized (index.lockFor(key)) {
            boolean listed = index.peek(key) != null;
            boolean file = Files.deleteIfExists(pathOf(digest));
            index.remove(key);
            return listed || file;
        }
    }

    @Override
    public Blob commit(Path temp, Digest digest, long size, String origin) throws IOException {
        long actual = Files.size(temp);
        if (actual != size) {
            throw new IOException("temporary file holds " + actual + " bytes, expected " + size);
        }
        // No fsync: after a crash or power cut, every blob is hashed again on its first read, so one
        // the kernel had not written out is dropped then, never served; and clients never wait for the disk.
        Path target = pathOf(digest);
        Files.createDirectories(target.getParent());
        Key key = new Key(ContentKind.BLOB, digest);
        synchronized (index.lockFor(key)) {
            index.hold(key); // eviction leaves it alone between its row and its file
            try {
                index.awaitUnlinked(key); // an old copy being evicted goes first, or it would take the new one along
                index.add(key, size, index.now(), true, origin); // first the row: a crash then leaves no file unlisted
                try {
                    link(temp, target);
                } catch (IOException | RuntimeException e) {
                    index.remove(key);
                    throw e;
                }
            } finally {
                index.unpin(key);
            }
        }
        grew.run();
        return new Blob(digest, target, size, true, null);
    }

    /** Makes {@code target} name the bytes of {@code temp}; quiet if it already exists (same digest, same bytes). */
    private void link(Path temp, Path target) throws IOException {
        try {
            Files.createLink(target, temp);
        } catch (FileAlreadyExistsException e) {
            // Committed concurrently or earlier.
        } catch (UnsupportedOperationException e) {
            copyInto(temp, target);
        }
    }

    private void copyInto(Path temp, Path target) throws IOException {
        Path copy = Files.createTempFile(tmp, "blob-", ".copy");
        try {
            Files.copy(temp, copy, StandardCopyOption.REPLACE_EXISTING);
            Files.move(copy, target, StandardCopyOption.ATOMIC_MOVE);
        } catch (AtomicMoveNotSupportedException | FileAlreadyExistsException ex) {
            Files.deleteIfExists(copy);
            if (ex instanceof AtomicMoveNotSupportedException) {
                throw ex;
            }
        }
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
        return index.bytes(ContentKind.BLOB);
    }

    @Override
    public long usableSpace() throws IOException {
        return space.usable();
    }
}
