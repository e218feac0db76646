package dev.registrymirror.cache;

import com.github.benmanes.caffeine.cache.Cache;
import com.github.benmanes.caffeine.cache.Caffeine;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.Optional;
import java.util.concurrent.atomic.AtomicLong;

/**
 * {@link ManifestStore} as files {@code manifests/<algorithm>/<first two hex>/<hex>} holding the exact
 * bytes, each with a {@code <hex>.type} file holding the media type. The type is written first, so
 * a manifest file without its type is never seen. In front, a Caffeine cache bounded by bytes.
 */
final class FileManifestStore implements ManifestStore {
    private final Path root;
    private final Cache<Digest, Manifest> memory;
    private final AtomicLong storedBytes = new AtomicLong();

    private FileManifestStore(Path root, long memoryBytes) {
        this.root = root.resolve("manifests");
        this.memory = Caffeine.newBuilder().maximumWeight(memoryBytes)
                .weigher((Digest d, Manifest m) -> m.bytes().length + 200).build();
    }

    static FileManifestStore open(Path root, long memoryBytes) throws IOException {
        FileManifestStore store = new FileManifestStore(root, memoryBytes);
        Files.createDirectories(store.root);
        // Only manifest bytes count, as in put(): not the .type files, nor leftover .part files.
        store.storedBytes.set(DiskUsage.bytesUnder(store.root, p -> {
            String name = p.getFileName().toString();
            return !name.endsWith(".type") && !name.endsWith(".part");
        }));
        return store;
    }

    private Path pathOf(Digest digest) {
        return root.resolve(digest.algorithm()).resolve(digest.hex().substring(0, 2)).resolve(digest.hex());
    }

    @Override
    public Optional<Manifest> cached(Digest digest) {
        return Optional.ofNullable(memory.getIfPresent(digest));
    }

    @Override
    public Optional<Manifest> find(Digest digest) throws IOException {
        Manifest m = memory.getIfPresent(digest);
        if (m != null) {
            return Optional.of(m);
        }
        Path p = pathOf(digest);
        byte[] bytes;
        String type;
        try {
            bytes = Files.readAllBytes(p);
            type = Files.readString(typeFile(p), StandardCharsets.UTF_8).trim();
        } catch (NoSuchFileException e) {
            return Optional.empty();
        }
        if (!Digest.of(digest.algorithm(), bytes).equals(digest)) {
            Files.deleteIfExists(p);
            return Optional.empty();
        }
        m = new Manifest(digest, type, bytes);
        memory.put(digest, m);
        return Optional.of(m);
    }

    @Override
    public void put(Manifest manifest) throws IOException {
        Path p = pathOf(manifest.digest());
        memory.put(manifest.digest(), manifest);
        if (Files.exists(p)) {
            return;
        }
        Files.createDirectories(p.getParent());
        AtomicFiles.write(typeFile(p), manifest.mediaType().getBytes(StandardCharsets.UTF_8));
        AtomicFiles.write(p, manifest.bytes());
        storedBytes.addAndGet(manifest.bytes().length);
    }

    @Override
    public long storedBytes() {
        return storedBytes.get();
    }

    private static Path typeFile(Path p) {
        return p.resolveSibling(p.getFileName() + ".type");
    }
}
