package dev.registrymirror.cache;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ManifestAndTagStoreTest {
    private static final String INDEX = "application/vnd.oci.image.index.v1+json";

    @TempDir
    Path root;

    ManifestStore manifests() throws IOException {
        return storage().manifests();
    }

    /** The storage opened last: opening the folder again makes it crash first. */
    Storage last;

    Storage storage() throws IOException {
        if (last != null) {
            last.crash();
        }
        ManualExecutor upkeep = new ManualExecutor();
        Storage s = Storage.open(root, Storage.Limits.NONE, new TestClock(), StorageEvents.NONE, upkeep);
        upkeep.runAll();
        last = s;
        return s;
    }

    @Test
    void manifestsSurviveReopenWithTheirType() throws IOException {
        byte[] bytes = "{\"schemaVersion\":2}".getBytes(StandardCharsets.UTF_8);
        Digest d = Digest.of("sha256", bytes);
        ManifestStore store = manifests();
        store.put(new ManifestStore.Manifest(d, INDEX, bytes));
        assertThat(store.cached(d)).isPresent();

        ManifestStore reopened = manifests();
        assertThat(reopened.cached(d)).isEmpty();
        ManifestStore.Manifest m = reopened.find(d).orElseThrow();
        assertThat(m.bytes()).isEqualTo(bytes);
        assertThat(m.mediaType()).isEqualTo(INDEX);
        assertThat(reopened.cached(d)).isPresent();
        assertThat(reopened.storedBytes()).isEqualTo(bytes.length); // as put() counted it, no .type files
    }

    @Test
    void aFindThatMissesDoesNotForgetAManifestPutMeanwhile() throws Exception {
        byte[] bytes = "{\"schemaVersion\":2,\"n\":1}".getBytes(StandardCharsets.UTF_8);
        Digest d = Digest.of("sha256", bytes);
        Storage storage = storage();
        ManifestStore store = storage.manifests();
        Thread finder = new Thread(() -> {
            try {
                store.find(d);
            } catch (IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        });
        // The finder misses on disk, then waits for the item's lock, which put() also takes: the put
        // lands exactly between the finder's miss and its removal of the (then) missing entry.
        synchronized (storage.index().lockFor(new CacheIndex.Key(ContentKind.MANIFEST, d))) {
            finder.start();
            while (finder.getState() != Thread.State.BLOCKED && finder.isAlive()) {
                Thread.onSpinWait();
            }
            store.put(new ManifestStore.Manifest(d, INDEX, bytes));
        }
        finder.join();
        assertThat(storage.storedCount(ContentKind.MANIFEST)).isEqualTo(1); // the miss used to drop the new entry
        assertThat(store.storedBytes()).isEqualTo(bytes.length);
    }

    @Test
    void aCorruptedManifestFileIsDroppedNotServed() throws IOException {
        byte[] bytes = "{\"a\":1}".getBytes(StandardCharsets.UTF_8);
        Digest d = Digest.of("sha256", bytes);
        manifests().put(new ManifestStore.Manifest(d, INDEX, bytes));
        Path file;
        try (Stream<Path> s = Files.walk(root.resolve("manifests"))) {
            file = s.filter(p -> p.getFileName().toString().equals(d.hex())).findFirst().orElseThrow();
        }
        Files.writeString(file, "{\"a\":2}");
        ManifestStore reopened = manifests();
        assertThat(reopened.find(d)).isEmpty();
        assertThat(Files.exists(file)).isFalse();
    }

    @Test
    void manifestBytesMustMatchDigest() {
        Digest d = Digest.of("sha256", new byte[] {1});
        assertThatThrownBy(() -> new ManifestStore.Manifest(d, INDEX, new byte[] {2}))
                .isInstanceOf(IllegalArgumentException.class);
    }

    @Test
    void tagsSurviveReopenAndCanBeRemoved() throws IOException {
        Digest d = Digest.of("sha256", new byte[] {7});
        TagStore.TagKey key = new TagStore.TagKey("docker.io", "library/alpine", "3.19");
        TagStore.TagKey nested = new TagStore.TagKey("docker.io", "library/alpine/3.19", "latest");
        TagStore store = storage().tags();
        Instant at = Instant.ofEpochMilli(1_700_000_000_123L);
        store.put(key, new TagStore.TagEntry(d, INDEX, 123, at));
        store.put(nested, new TagStore.TagEntry(d, "type; with=params", 1, at));

        TagStore reopened = storage().tags();
        assertThat(reopened.cached(key)).isEmpty();
        assertThat(reopened.find(key)).contains(new TagStore.TagEntry(d, INDEX, 123, at));
        assertThat(reopened.find(nested).orElseThrow().mediaType()).isEqualTo("type; with=params");
        assertThat(reopened.find(new TagStore.TagKey("ghcr.io", "library/alpine", "3.19"))).isEmpty();
        reopened.remove(key);
        assertThat(storage().tags().find(key)).isEmpty();
    }
}
