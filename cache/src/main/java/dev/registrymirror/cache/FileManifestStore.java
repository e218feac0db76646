package dev.registrymirror.cache;

import com.github.benmanes.caffeine.cache.Cache;
import com.github.benmanes.caffeine.cache.Caffeine;
import dev.registrymirror.cache.CacheIndex.Key;
import dev.registrymirror.cache.CacheIndex.Kind;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.List;
import java.util.Optional;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@link ManifestStore} as files {@code manifests/<algorithm>/<first two hex>/<hex>} holding the exact
 * bytes, each with a {@code <hex>.type} file holding the media type. The type is put in place first,
 * so a manifest file without its type is never seen. In front, a Caffeine cache bounded by bytes.
 */
final class FileManifestStore implements ManifestStore {
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
        index.deleter(Kind.MANIFEST, d -> {
            memory.invalidate(d);
            Path p = pathOf(d);
            Files.deleteIfExists(p);
            Files.deleteIfExists(typeFile(p));
        });
    }

    Path pathOf(Digest digest) {
        return StorageScan.fanOut(root, digest);
    }

    /** Adds the manifests on disk to {@code into}, and deletes temporary files a crash left behind. */
    void scan(List<CacheIndex.Scanned> into) throws IOException {
        StorageScan.contentFiles(root, (d, attrs) -> into.add(new CacheIndex.Scanned(new Key(Kind.MANIFEST, d),
                attrs.size(), attrs.lastModifiedTime().toMillis())), (p, attrs) -> {
                    if (AtomicFiles.isLeftover(p.getFileName().toString(), run)) {
                        Files.deleteIfExists(p);
                    }
                });
    }

    @Override
    public Optional<Manifest> cached(Digest digest) {
        Manifest m = memory.getIfPresent(digest);
        if (m != null) {
            index.accessed(new Key(Kind.MANIFEST, digest));
        }
        return Optional.ofNullable(m);
    }

    @Override
    public Optional<Manifest> find(Digest digest) throws IOException {
        Optional<Manifest> inMemory = cached(digest);
        if (inMemory.isPresent()) {
            return inMemory;
        }
        Key key = new Key(Kind.MANIFEST, digest);
        Path p = pathOf(digest);
        byte[] bytes;
        String type;
        try {
            bytes = Files.readAllBytes(p);
            type = Files.readString(typeFile(p), StandardCharsets.UTF_8).trim();
        } catch (NoSuchFileException e) {
            // Under the monitor that put() holds while it installs files: a manifest put since the read
            // above keeps its entry.
            synchronized (index) {
                if (!Files.exists(p)) {
                    index.remove(key);
                }
            }
            return Optional.empty();
        }
        if (!Digest.of(digest.algorithm(), bytes).equals(digest)) {
            LOG.warn("stored manifest {} does not match its digest; dropped", digest);
            synchronized (index) {
                Files.deleteIfExists(p);
                Files.deleteIfExists(typeFile(p));
                index.remove(key);
            }
            events.corruptDropped(Kind.MANIFEST.label);
            return Optional.empty();
        }
        synchronized (index) {
            if (index.lookup(key) == null && Files.exists(p)) {
                index.add(key, bytes.length, index.now(), true);
            }
        }
        Manifest m = new Manifest(digest, type, bytes);
        memory.put(digest, m);
        return Optional.of(m);
    }

    @Override
    public void put(Manifest manifest) throws IOException {
        Key key = new Key(Kind.MANIFEST, manifest.digest());
        Path p = pathOf(manifest.digest());
        if (index.lookup(key) != null && Files.exists(p)) {
            memory.put(manifest.digest(), manifest);
            return;
        }
        Files.createDirectories(p.getParent());
        Path type = AtomicFiles.prepare(typeFile(p), manifest.mediaType().getBytes(StandardCharsets.UTF_8), run);
        Path bytes = null;
        try {
            bytes = AtomicFiles.prepare(p, manifest.bytes(), run);
            synchronized (index) {
                index.awaitUnlinked(key);
                AtomicFiles.install(type, typeFile(p));
                AtomicFiles.install(bytes, p);
                index.add(key, manifest.bytes().length, index.now(), true);
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
        return index.bytes(Kind.MANIFEST);
    }

    private static Path typeFile(Path p) {
        return p.resolveSibling(p.getFileName() + ".type");
    }
}
