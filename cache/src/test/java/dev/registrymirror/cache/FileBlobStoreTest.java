package dev.registrymirror.cache;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class FileBlobStoreTest {
    @TempDir
    Path root;
    final TestClock clock = new TestClock();
    final ManualExecutor upkeep = new ManualExecutor();
    final RecordingEvents events = new RecordingEvents();

    /** The storage opened last: opening the folder again makes it crash first, unless it was closed. */
    Storage last;

    Storage open() throws IOException {
        if (last != null) {
            last.crash();
        }
        last = Storage.open(root, Storage.Limits.NONE, clock, events, upkeep);
        return last;
    }

    static BlobStore.Blob put(BlobStore store, byte[] bytes) throws IOException {
        Path temp = store.newTempFile();
        Files.write(temp, bytes);
        BlobStore.Blob blob = store.commit(temp, Digest.of("sha256", bytes), bytes.length);
        store.discard(temp);
        return blob;
    }

    @Test
    void commitMakesTheBlobVisibleAndCountsIt() throws IOException {
        Storage storage = open();
        upkeep.runAll();
        BlobStore store = storage.blobs();
        byte[] bytes = "layer bytes".getBytes(StandardCharsets.UTF_8);
        Digest d = Digest.of("sha256", bytes);
        assertThat(store.find(d)).isEmpty();

        Path temp = store.newTempFile();
        Files.write(temp, bytes);
        assertThat(store.find(d)).isEmpty();
        BlobStore.Blob blob = store.commit(temp, d, bytes.length);
        store.discard(temp);

        assertThat(Files.exists(temp)).isFalse();
        BlobStore.Blob found = store.find(d).orElseThrow();
        assertThat(found.path()).isEqualTo(blob.path());
        assertThat(found.verified()).isTrue();
        assertThat(Files.readAllBytes(blob.path())).isEqualTo(bytes);
        assertThat(blob.path()).startsWith(root);
        assertThat(store.storedBytes()).isEqualTo(bytes.length);
    }

    @Test
    void wrongSizeIsNotCommitted() throws IOException {
        BlobStore store = open().blobs();
        Path temp = store.newTempFile();
        Files.write(temp, new byte[10]);
        Digest d = Digest.of("sha256", new byte[10]);
        assertThatThrownBy(() -> store.commit(temp, d, 11)).isInstanceOf(IOException.class);
        assertThat(store.find(d)).isEmpty();
    }

    @Test
    void secondCommitOfSameDigestKeepsTheFirst() throws IOException {
        BlobStore store = open().blobs();
        for (int i = 0; i < 2; i++) {
            put(store, new byte[] {1, 2, 3});
        }
        assertThat(store.storedBytes()).isEqualTo(3);
    }

    @Test
    void beforeTheScanFinishesBlobsAreFoundOnDiskAndLeftoversGoOnceItRuns() throws IOException {
        BlobStore first = open().blobs();
        upkeep.runAll();
        BlobStore.Blob blob = put(first, new byte[] {9, 9});
        BlobStore.Blob other = put(first, new byte[] {8, 8, 8});
        Path leftover = first.newTempFile();
        Files.write(leftover, new byte[100]);

        Storage reopened = open(); // the scan is queued, not run
        assertThat(Files.exists(leftover)).isFalse(); // moved aside at once
        assertThat(reopened.indexed()).isNotDone();
        BlobStore.Blob found = reopened.blobs().find(blob.digest()).orElseThrow();
        assertThat(found.size()).isEqualTo(2);
        assertThat(found.verified()).isFalse(); // not hashed since this start
        assertThat(reopened.blobs().storedBytes()).as("as the index of the last run has it").isEqualTo(5);

        upkeep.runAll();
        assertThat(reopened.indexed()).isDone();
        assertThat(reopened.blobs().storedBytes()).isEqualTo(5); // found once, not twice
        assertThat(reopened.blobs().find(other.digest())).isPresent();
        assertThat(events.readyItems).isEqualTo(2);
        try (Stream<Path> in = Files.list(root)) {
            assertThat(in.map(p -> p.getFileName().toString())).noneMatch(n -> n.startsWith("tmp-stale"));
        }
    }

    @Test
    void knownPresentAnswersForRecentCommitsFromMemory() throws IOException {
        Storage first = open();
        upkeep.runAll();
        BlobStore.Blob kept = put(first.blobs(), new byte[] {7});
        assertThat(first.blobs().knownPresent(kept.digest())).isTrue();
        first.close();

        Storage reopened = open();
        upkeep.runAll();
        BlobStore store = reopened.blobs();
        assertThat(store.knownPresent(kept.digest())).as("stored, but not committed by this run").isFalse();
        assertThat(store.find(kept.digest())).isPresent();
        Digest never = Digest.of("sha256", new byte[] {6});
        assertThat(store.knownPresent(never)).isFalse();

        BlobStore.Blob added = put(store, new byte[] {6});
        assertThat(store.knownPresent(never)).isTrue();
        Files.delete(added.path()); // by hand
        store.forget(added);
        assertThat(store.knownPresent(never)).isFalse();
        assertThat(store.find(never)).isEmpty();
    }

    @Test
    void aBlobWhoseBytesChangedOnDiskIsDroppedWhenVerified() throws IOException {
        BlobStore first = open().blobs();
        upkeep.runAll();
        BlobStore.Blob good = put(first, "good bytes".getBytes(StandardCharsets.UTF_8));
        BlobStore.Blob truncated = put(first, "longer bytes here".getBytes(StandardCharsets.UTF_8));
        BlobStore.Blob flipped = put(first, "flip me".getBytes(StandardCharsets.UTF_8));
        Files.write(truncated.path(), "longer".getBytes(StandardCharsets.UTF_8));
        Files.write(flipped.path(), "flip mE".getBytes(StandardCharsets.UTF_8));

        Storage reopened = open();
        upkeep.runAll();
        BlobStore store = reopened.blobs();
        for (BlobStore.Blob bad : new BlobStore.Blob[] {truncated, flipped}) {
            BlobStore.Blob found = store.acquire(bad.digest()).orElseThrow();
            assertThat(found.verified()).isFalse();
            assertThat(store.verify(found)).isFalse();
            store.release(found);
            assertThat(Files.exists(bad.path())).isFalse();
            assertThat(store.find(bad.digest())).isEmpty();
        }
        BlobStore.Blob found = store.find(good.digest()).orElseThrow();
        assertThat(store.verify(found)).isTrue();
        assertThat(store.find(good.digest()).orElseThrow().verified()).isTrue();
        assertThat(events.corrupt).containsExactly("blob", "blob");
        assertThat(store.storedBytes()).isEqualTo("good bytes".length());
    }

    @Test
    void aBlobDeletedByHandIsForgotten() throws IOException {
        Storage storage = open();
        upkeep.runAll();
        BlobStore.Blob blob = put(storage.blobs(), new byte[] {5});
        Files.delete(blob.path());
        BlobStore.Blob stale = storage.blobs().find(blob.digest()).orElseThrow(); // the index still has it
        storage.blobs().forget(stale);
        assertThat(storage.blobs().find(blob.digest())).isEmpty();
        assertThat(storage.blobs().storedBytes()).isZero();
    }
}
