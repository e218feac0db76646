package dev.registrymirror.cache;

import com.github.benmanes.caffeine.cache.Cache;
import com.github.benmanes.caffeine.cache.Caffeine;
import dev.registrymirror.cache.CacheIndex.Key;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.Optional;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@link ManifestStore} as files {@code manifests/<algorithm>/<first two hex>/<hex>} holding the exact
 * bytes, each with a {@code <hex>.type} file holding the media type. The type is put in place first,
 * so a manifest file without its type is never seen; both appear under the item's
 * {@link CacheIndex#lockFor lock}, after its row is in the index. In front, a Caffeine cache bounded by
 * bytes.
 */
final class FileManifestStore implements ManifestStore, StorageScan.ContentFolder {
    private static final Logger LOG = LoggerFactory.getLogger(FileManifestStore.class);

    private final Path root;
    private final Cache<Digest, Manifest> memory;
    private final CacheIndex index;
    private final StorageEvents events;
    private final String run;
    private final Runnable grew;

    FileManifestStore(Path root, long memoryBytes, CacheIndex index, StorageEvents events, String run,
                      Runnable grew) throws IOException {
        this.root = root.resolve("manifests");
        this.memory = Caffeine.newBuilder().maximumWeight(memoryBytes)
                .weigher((Digest d, Manifest m) -> m.bytes().length + 200).build();
        this.index = index;
        this.events = events;
        this.run = run;
        this.grew = grew;
        Files.createDirectories(this.root);
        index.deleter(ContentKind.MANIFEST, d -> {
            memory.invalidate(d);
            Path p = pathOf(d);
            Files.deleteIfExists(p);
            Files.deleteIfExists(typeFile(p));
        });
    }

    Path pathOf(Digest digest) {
        return StorageScan.fanOut(root, digest);
    }

    @Override
    public ContentKind kind() {
        return ContentKind.MANIFEST;
    }

    @Override
    public Path folder() {
        return root;
    }

    @Override
    public boolean forgetIfMissing(Digest digest) throws IOException {
        Key key = new Key(ContentKind.MANIFEST, digest);
        synchronized (index.lockFor(key)) {
            if (!Files.exists(pathOf(digest))) {
                memory.invalidate(digest);
                index.remove(key);
                return true;
            }
            return false;
        }
    }

    /** Deletes a crash's temporary files, and a type file whose manifest never appeared. */
    @Override
    public void otherFile(Path file) throws IOException {
        String name = file.getFileName().toString();
        if (AtomicFiles.isLeftover(name, run)) {
            Files.deleteIfExists(file);
            return;
        }
        if (name.endsWith(".type")) {
            String hex = name.substring(0, name.length() - ".type".length());
            String alg = file.getParent().getParent().getFileName().toString();
            if (Digest.isValid(alg + ":" + hex)) {
                Key key = new Key(ContentKind.MANIFEST, Digest.parse(alg + ":" + hex));
                synchronized (index.lockFor(key)) {
                    if (!Files.exists(file.resolveSibling(hex))) {
                        Files.deleteIfExists(file);
                    }
                }
            }
        }
    }

    /** Deletes a manifest, its type file and its row (an operator's removal): true if any was there. Blocks. */
    boolean remove(Digest digest) throws IOException {
        Key key = new Key(ContentKind.MANIFEST, digest);
        synchronized (index.lockFor(key)) {
            memory.invalidate(digest);
            boolean listed = index.peek(key) != null;
            Path p = pathOf(digest);
            boolean file = Files.deleteIfExists(p);
            Files.deleteIfExists(typeFile(p));
            index.remove(key);
            return listed || file;
        }
    }

    /**
     * The manifest from memory or disk without counting it as a use or keeping it in memory (an
     * operator's listing must not change what eviction picks); empty if absent or not matching. Blocks.
     */
    Optional<Manifest> peek(Digest digest) throws IOException {
        Manifest m = memory.getIfPresent(digest);
        if (m != null) {
            return Optional.of(m);
        }
        Path p = pathOf(digest);
        try {
            return Optional.of(new Manifest(digest, Files.readString(typeFile(p), StandardCharsets.UTF_8).trim(),
                    Files.readAllBytes(p)));
        } catch (NoSuchFileException | IllegalArgumentException e) {
            return Optional.empty(); // a mismatch is dropped by the next real read
        }
    }

    @Override
    public Optional<Manifest> cached(Digest digest) {
        Manifest m = memory.getIfPresent(digest);
        if (m != null) {
            index.accessed(new Key(ContentKind.MANIFEST, digest));
        }
        return Optional.ofNullable(m);
    }

    @Override
    public Optional<Manifest> find(Digest digest) throws IOException {
        Optional<Manifest> inMemory = cached(digest);
        if (inMemory.isPresent()) {
            return inMemory;
        }
        Key key = new Key(ContentKind.MANIFEST, digest);
        Path p = pathOf(digest);
        byte[] bytes;
        String type;
        try {
            bytes = Files.readAllBytes(p);
            type = Files.readString(typeFile(p), StandardCharsets.UTF_8).trim();
        } catch (NoSuchFileException e) {
            forgetIfMissing(digest); // under the lock put() holds: a manifest put since the read stays
            return Optional.empty();
        }
        if (!Digest.of(digest.algorithm(), bytes).equals(digest)) {
            LOG.warn("stored manifest {} does not match its digest; dropped", digest);
            synchronized (index.lockFor(key)) {
                Files.deleteIfExists(p);
                Files.deleteIfExists(typeFile(p));
                index.remove(key);
            }
            events.corruptDropped(ContentKind.MANIFEST.label());
            return Optional.empty();
        }
        if (index.lookup(key) == null) {
            synchronized (index.lockFor(key)) { // the file found before the reconciliation reached it
                if (Files.exists(p)) {
                    index.add(key, bytes.length, index.now(), true);
                }
            }
        }
        Manifest m = new Manifest(digest, type, bytes);
        memory.put(digest, m);
        return Optional.of(m);
    }

    @Override
    public void put(Manifest manifest, String origin) throws IOException {
        Key key = new Key(ContentKind.MANIFEST, manifest.digest());
        Path p = pathOf(manifest.digest());
        if (index.lookup(key) != null && Files.exists(p)) {
            if (origin != null) {
                index.addOrigin(key, origin);
            }
            memory.put(manifest.digest(), manifest);
            return;
        }
        Files.createDirectories(p.getParent());
        Path type = AtomicFiles.prepare(typeFile(p), manifest.mediaType().getBytes(StandardCharsets.UTF_8), run);
        Path bytes = null;
        try {
            bytes = AtomicFiles.prepare(p, manifest.bytes(), run);
            synchronized (index.lockFor(key)) {
                index.hold(key); // eviction leaves it alone between its row and its files
                try {
                    index.awaitUnlinked(key); // an old copy being evicted goes first
                    index.add(key, manifest.bytes().length, index.now(), true, origin); // the row first, then the files
                    try {
                        AtomicFiles.install(type, typeFile(p));
                        AtomicFiles.install(bytes, p);
                    } catch (IOException | RuntimeException e) {
                        if (!Files.exists(p)) {
                            index.remove(key);
                        }
                        throw e;
                    }
                } finally {
                    index.unpin(key);
                }
            }
        } finally {
            Files.deleteIfExists(type);
            if (bytes != null) {
                Files.deleteIfExists(bytes);
            }
        }
        memory.put(manifest.digest(), manifest);
        grew.run();
    }

    @Override
    public long storedBytes() {
        return index.bytes(ContentKind.MANIFEST);
    }

    private static Path typeFile(Path p) {
        return p.resolveSibling(p.getFileName() + ".type");
    }
}
