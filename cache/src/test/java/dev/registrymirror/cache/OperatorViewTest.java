package dev.registrymirror.cache;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** What the admin API reads and removes: items looked at without counting as uses, tag listings, removals. */
class OperatorViewTest {
    private static final String OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";

    @TempDir
    Path root;
    final TestClock clock = new TestClock();
    Storage storage;

    @AfterEach
    void close() {
        if (storage != null) {
            storage.close();
        }
    }

    private Storage open() throws IOException {
        ManualExecutor upkeep = new ManualExecutor();
        storage = Storage.open(root, Storage.Limits.NONE, clock, StorageEvents.NONE, upkeep);
        upkeep.runAll();
        return storage;
    }

    private Digest blob(byte[] bytes) throws IOException {
        Path temp = storage.blobs().newTempFile();
        Files.write(temp, bytes);
        Digest d = Digest.of("sha256", bytes);
        storage.blobs().commit(temp, d, bytes.length);
        storage.blobs().discard(temp);
        return d;
    }

    @Test
    void peekingAtItemsIsNotAUse() throws IOException {
        open();
        Instant committed = clock.instant();
        Digest b = blob("layer".getBytes(StandardCharsets.UTF_8));
        byte[] mBytes = "{\"schemaVersion\":2}".getBytes(StandardCharsets.UTF_8);
        Digest m = Digest.of("sha256", mBytes);
        storage.manifests().put(new ManifestStore.Manifest(m, OCI_MANIFEST, mBytes));

        clock.advance(Duration.ofHours(2));
        assertThat(storage.blob(b)).contains(new Storage.Item(5, committed));
        assertThat(storage.readManifest(m).orElseThrow().bytes()).isEqualTo(mBytes);
        assertThat(storage.manifest(m)).contains(new Storage.Item(mBytes.length, committed));
        assertThat(storage.manifest(b)).isEmpty();

        storage.blobs().find(b); // a real use, noted in memory first
        assertThat(storage.blob(b).orElseThrow().lastUse()).isEqualTo(committed.plus(Duration.ofHours(2)));
    }

    @Test
    void removingADigestRemovesTheBlobAndTheManifestStoredUnderIt() throws IOException {
        open();
        Digest b = blob("layer".getBytes(StandardCharsets.UTF_8));
        byte[] mBytes = "{\"schemaVersion\":2}".getBytes(StandardCharsets.UTF_8);
        Digest m = Digest.of("sha256", mBytes);
        storage.manifests().put(new ManifestStore.Manifest(m, OCI_MANIFEST, mBytes));
        long before = storage.blobs().storedBytes();

        assertThat(storage.remove(b)).containsExactly("blob");
        assertThat(storage.blobs().find(b)).isEmpty();
        assertThat(storage.blobs().storedBytes()).isEqualTo(before - 5);
        assertThat(storage.remove(m)).containsExactly("manifest");
        assertThat(storage.manifests().cached(m)).as("gone from memory too").isEmpty();
        assertThat(storage.manifests().find(m)).isEmpty();
        assertThat(storage.remove(m)).isEmpty();
        assertThat(storage.storedCount(ContentKind.BLOB) + storage.storedCount(ContentKind.MANIFEST)).isZero();
    }

    @Test
    void repositoriesAreListedComponentByComponentAndTheirTagsRemoved() throws IOException {
        open();
        TagStore tags = storage.tags();
        TagStore.TagEntry e = new TagStore.TagEntry(Digest.of("sha256", new byte[1]), OCI_MANIFEST, 10, clock.instant());
        for (String name : List.of("docker.io/library/alpine:3.19", "docker.io/library/alpine:3.20",
                "docker.io/library-x/app:1", "docker.io/library/alpine/sub:1", "ghcr.io/acme/tool:v1")) {
            int slash = name.indexOf('/');
            int colon = name.lastIndexOf(':');
            tags.put(new TagStore.TagKey(name.substring(0, slash), name.substring(slash + 1, colon),
                    name.substring(colon + 1)), e);
        }
        assertThat(tags.repositories()).containsExactly("docker.io/library/alpine", "docker.io/library/alpine/sub",
                "docker.io/library-x/app", "ghcr.io/acme/tool");
        assertThat(tags.tags("docker.io", "library/alpine")).containsOnlyKeys("3.19", "3.20");

        assertThat(tags.removeRepository("docker.io", "library/alpine")).isEqualTo(2);
        assertThat(tags.cached(new TagStore.TagKey("docker.io", "library/alpine", "3.19"))).isEmpty();
        assertThat(tags.find(new TagStore.TagKey("docker.io", "library/alpine", "3.19"))).isEmpty();
        assertThat(tags.repositories()).as("a nested repository is its own").containsExactly(
                "docker.io/library/alpine/sub", "docker.io/library-x/app", "ghcr.io/acme/tool");
        assertThat(tags.removeRepository("docker.io", "library/alpine")).isZero();
    }
}
