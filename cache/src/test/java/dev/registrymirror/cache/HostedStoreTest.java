package dev.registrymirror.cache;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class HostedStoreTest {
    private static final String INDEX = "application/vnd.oci.image.index.v1+json";
    private static final String MANIFEST = "application/vnd.oci.image.manifest.v1+json";
    private final TestClock clock = new TestClock();

    private static Digest sha(byte[] b) {
        return Digest.of("sha256", b);
    }

    private static HostedStore.References refs(List<Digest> blobs, List<Digest> manifests) {
        return new HostedStore.References(blobs, manifests, null, null, null);
    }

    private HostedStore.Item upload(HostedStore s, String repo, String id, byte[] bytes) throws Exception {
        Path f = s.newUpload(id);
        Files.write(f, bytes);
        return s.commitBlob(repo, f, sha(bytes), bytes.length);
    }

    @Test
    void blobsBelongToTheRepositoriesTheyWereUploadedOrMountedTo(@TempDir Path dir) throws Exception {
        try (HostedStore s = HostedStore.open(dir, clock, 0)) {
            byte[] layer = "layer".getBytes(StandardCharsets.UTF_8);
            HostedStore.Item item = upload(s, "team/a", "u1", layer);
            assertThat(Files.readAllBytes(item.path())).isEqualTo(layer);
            assertThat(s.uploadFile("u1")).doesNotExist();
            assertThat(s.blob("team/a", sha(layer))).isPresent();
            assertThat(s.blob("team/b", sha(layer))).isEmpty();
            assertThat(s.mount("team/x", "team/b", sha(layer))).isEmpty();
            assertThat(s.mount("team/a", "team/b", sha(layer))).isPresent();
            assertThat(s.blob("team/b", sha(layer))).isPresent();
            // The same bytes pushed again to another repository: stored once.
            upload(s, "team/c", "u2", layer);
            assertThat(s.blobCount()).isEqualTo(1);
            assertThat(s.bytes()).isEqualTo(layer.length);
        }
    }

    @Test
    void aManifestIsStoredOnlyWhenItsRepositoryHoldsWhatItNames(@TempDir Path dir) throws Exception {
        try (HostedStore s = HostedStore.open(dir, clock, 0)) {
            byte[] config = "{}".getBytes(StandardCharsets.UTF_8);
            byte[] layer = "layer".getBytes(StandardCharsets.UTF_8);
            upload(s, "team/a", "c", config);
            byte[] m = ("{\"layers\":\"" + sha(layer) + "\"}").getBytes(StandardCharsets.UTF_8);
            assertThatThrownBy(() -> s.putManifest("team/a", "1.0", sha(m), MANIFEST, m,
                    refs(List.of(sha(config), sha(layer)), List.of())))
                    .isInstanceOf(HostedStore.MissingReference.class)
                    .hasMessageContaining("blob " + sha(layer));
            assertThat(s.tagged("team/a", "1.0")).isEmpty();
            assertThat(s.manifestCount()).isZero();

            upload(s, "team/a", "l", layer);
            assertThat(s.putManifest("team/a", "1.0", sha(m), MANIFEST, m,
                    refs(List.of(sha(config), sha(layer)), List.of()))).isTrue();
            HostedStore.Item tagged = s.tagged("team/a", "1.0").orElseThrow();
            assertThat(tagged.digest()).isEqualTo(sha(m));
            assertThat(tagged.mediaType()).isEqualTo(MANIFEST);
            assertThat(s.read(tagged)).isEqualTo(m);
            assertThat(s.manifest("team/a", sha(m))).isPresent();
            assertThat(s.manifest("team/b", sha(m))).isEmpty();

            // An index names manifests, which must be in the repository.
            byte[] idx = ("{\"manifests\":\"" + sha(m) + "\"}").getBytes(StandardCharsets.UTF_8);
            assertThatThrownBy(() -> s.putManifest("team/b", "1.0", sha(idx), INDEX, idx, refs(List.of(), List.of(sha(m)))))
                    .isInstanceOf(HostedStore.MissingReference.class).hasMessageContaining("manifest " + sha(m));
            s.putManifest("team/a", "multi", sha(idx), INDEX, idx, refs(List.of(), List.of(sha(m))));
            assertThat(s.tagged("team/a", "multi").orElseThrow().mediaType()).isEqualTo(INDEX);
        }
    }

    @Test
    void tagsAreListedInOrderAndPaged(@TempDir Path dir) throws Exception {
        try (HostedStore s = HostedStore.open(dir, clock, 0)) {
            byte[] m = "{}".getBytes(StandardCharsets.UTF_8);
            for (String t : List.of("b", "a", "c", "1.0")) {
                s.putManifest("team/a", t, sha(m), MANIFEST, m, refs(List.of(), List.of()));
            }
            assertThat(s.tags("team/a", null, 10)).containsExactly("1.0", "a", "b", "c");
            assertThat(s.tags("team/a", null, 2)).containsExactly("1.0", "a", "b"); // one more: there are more
            assertThat(s.tags("team/a", "a", 2)).containsExactly("b", "c");
            assertThat(s.tags("team/none", null, 10)).isEmpty();
            assertThat(s.manifestCount()).isEqualTo(1);
        }
    }

    @Test
    void overTheQuotaAPushIsRefusedAndNothingStoredIsLost(@TempDir Path dir) throws Exception {
        try (HostedStore s = HostedStore.open(dir, clock, 10)) {
            byte[] first = "12345678".getBytes(StandardCharsets.UTF_8);
            upload(s, "team/a", "1", first);
            Path f = s.newUpload("2");
            byte[] second = "abc".getBytes(StandardCharsets.UTF_8);
            Files.write(f, second);
            assertThatThrownBy(() -> s.commitBlob("team/a", f, sha(second), second.length))
                    .isInstanceOf(HostedStore.QuotaExceeded.class)
                    .hasMessageContaining("over hosted.maxSize (10 bytes; 8 stored)");
            assertThat(s.blob("team/a", sha(second))).isEmpty();
            assertThat(s.blob("team/a", sha(first))).isPresent();
            // Bytes already stored cost nothing more: a second repository may have them.
            upload(s, "team/b", "3", first);
            assertThat(s.blob("team/b", sha(first))).isPresent();
        }
    }

    @Test
    void whatWasCommittedSurvivesAReopenAndUnfinishedUploadsDoNot(@TempDir Path dir) throws Exception {
        byte[] layer = "layer".getBytes(StandardCharsets.UTF_8);
        byte[] m = "{}".getBytes(StandardCharsets.UTF_8);
        try (HostedStore s = HostedStore.open(dir, clock, 0)) {
            upload(s, "team/a", "u", layer);
            s.putManifest("team/a", "1", sha(m), MANIFEST, m, refs(List.of(sha(layer)), List.of()));
            Files.write(s.newUpload("half"), "par".getBytes(StandardCharsets.UTF_8));
        }
        try (HostedStore s = HostedStore.open(dir, clock, 0)) {
            assertThat(s.blob("team/a", sha(layer))).isPresent();
            assertThat(s.tagged("team/a", "1")).isPresent();
            assertThat(s.bytes()).isEqualTo(layer.length + m.length);
            assertThat(s.uploadFile("half")).doesNotExist();
        }
    }

    @Test
    void anUnreadableDatabaseStopsTheStartInsteadOfLosingPushedImages(@TempDir Path dir) throws Exception {
        Files.writeString(dir.resolve("hosted.db"), "not a database, but the only record of pushed images ".repeat(100));
        assertThatThrownBy(() -> HostedStore.open(dir, clock, 0))
                .hasMessageContaining("cannot open the hosted repositories' database")
                .hasMessageContaining("only record of pushed images");
        assertThat(dir.resolve("hosted.db")).exists();
    }

    @Test
    void collectionRemovesWhatNoManifestNamesOnceTheGraceIsOver(@TempDir Path dir) throws Exception {
        try (HostedStore s = HostedStore.open(dir, clock, 0)) {
            byte[] config = "{}".getBytes(StandardCharsets.UTF_8);
            byte[] kept = "kept".getBytes(StandardCharsets.UTF_8);
            byte[] old = "old".getBytes(StandardCharsets.UTF_8);
            upload(s, "team/a", "1", config);
            upload(s, "team/a", "2", kept);
            HostedStore.Item oldFile = upload(s, "team/a", "3", old);
            byte[] m = ("{\"m\":\"" + sha(kept) + "\"}").getBytes(StandardCharsets.UTF_8);
            s.putManifest("team/a", "1", sha(m), MANIFEST, m, refs(List.of(sha(config), sha(kept)), List.of()));
            clock.advance(java.time.Duration.ofHours(2));
            byte[] fresh = "fresh".getBytes(StandardCharsets.UTF_8);
            upload(s, "team/a", "4", fresh); // for a manifest not yet pushed

            HostedStore.Collected c = s.collect(java.time.Duration.ofHours(1).toMillis());
            assertThat(c.blobs()).isEqualTo(1);
            assertThat(c.bytes()).isEqualTo(old.length);
            assertThat(oldFile.path()).doesNotExist();
            assertThat(s.blob("team/a", sha(old))).isEmpty();
            assertThat(s.blob("team/a", sha(kept))).isPresent();
            assertThat(s.blob("team/a", sha(fresh))).isPresent();

            // Deleting the manifest frees what it named, and itself; the tag goes with it.
            assertThat(s.deleteManifest("team/a", sha(m))).isTrue();
            assertThat(s.deleteManifest("team/a", sha(m))).isFalse();
            assertThat(s.tagged("team/a", "1")).isEmpty();
            c = s.collect(java.time.Duration.ofHours(1).toMillis());
            assertThat(c.manifests()).isEqualTo(1);
            assertThat(c.blobs()).isEqualTo(2); // config and kept; fresh is still within its grace
            assertThat(s.blobCount()).isEqualTo(1);
            assertThat(s.manifestCount()).isZero();
            assertThat(s.bytes()).isEqualTo(fresh.length);
        }
    }

    @Test
    void anIndexKeepsTheManifestsItNamesAndATagDeletionKeepsTheManifest(@TempDir Path dir) throws Exception {
        try (HostedStore s = HostedStore.open(dir, clock, 0)) {
            byte[] m = "{\"a\":1}".getBytes(StandardCharsets.UTF_8);
            s.putManifest("team/a", null, sha(m), MANIFEST, m, refs(List.of(), List.of()));
            byte[] idx = ("{\"i\":\"" + sha(m) + "\"}").getBytes(StandardCharsets.UTF_8);
            s.putManifest("team/a", "multi", sha(idx), INDEX, idx, refs(List.of(), List.of(sha(m))));
            s.deleteManifest("team/a", sha(m)); // the child leaves the repository, the index still names it
            assertThat(s.collect(0).manifests()).isZero();
            assertThat(s.deleteTag("team/a", "multi")).isTrue();
            assertThat(s.deleteTag("team/a", "multi")).isFalse();
            assertThat(s.manifest("team/a", sha(idx))).isPresent(); // by digest it stays
            s.deleteManifest("team/a", sha(idx));
            assertThat(s.collect(0).manifests()).isEqualTo(2);
        }
    }

    @Test
    void strayFilesACrashLeftAreCollected(@TempDir Path dir) throws Exception {
        Path stray;
        try (HostedStore s = HostedStore.open(dir, clock, 0)) {
            byte[] b = "orphan".getBytes(StandardCharsets.UTF_8);
            stray = StorageScan.fanOut(dir.resolve("blobs"), sha(b));
            Files.createDirectories(stray.getParent());
            Files.write(stray, b); // moved into place, then the process died before the row was committed
            Files.setLastModifiedTime(stray, java.nio.file.attribute.FileTime.fromMillis(clock.millis()
                    - java.time.Duration.ofHours(2).toMillis()));
            HostedStore.Collected c = s.collect(java.time.Duration.ofHours(1).toMillis());
            assertThat(c.strayFiles()).isEqualTo(1);
            assertThat(stray).doesNotExist();
        }
    }
}
