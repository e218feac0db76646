package dev.registrymirror.cache;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.CacheIndex.Key;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.Statement;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The index in its database: kept across restarts, reconciled with the disk after a stop that was
 * not clean, set aside when unreadable; its upkeep works in batches and reports every failure.
 */
class CacheIndexTest {
    static final String TYPE = "application/vnd.oci.image.manifest.v1+json";

    @TempDir
    Path root;
    final TestClock clock = new TestClock();
    final ManualExecutor upkeep = new ManualExecutor();
    final RecordingEvents events = new RecordingEvents();

    /** The storage opened last: the next one opened on the folder finds it crashed, unless it was closed. */
    Storage last;

    /** Opens the folder, the storage opened before it crashing first if it was not closed; the scan not run yet. */
    Storage openQueued(Storage.Limits limits) throws IOException {
        if (last != null) {
            last.crash();
        }
        last = Storage.open(root, limits, clock, events, upkeep);
        return last;
    }

    Storage open(Storage.Limits limits) throws IOException {
        Storage s = openQueued(limits);
        upkeep.runAll();
        return s;
    }

    Storage open() throws IOException {
        return open(Storage.Limits.NONE);
    }

    static byte[] bytes(int n, int seed) {
        byte[] b = new byte[n];
        java.util.Arrays.fill(b, (byte) seed);
        return b;
    }

    BlobStore.Blob put(Storage s, int n, int seed) throws IOException {
        BlobStore.Blob b = FileBlobStoreTest.put(s.blobs(), bytes(n, seed));
        clock.advance(Duration.ofSeconds(1));
        return b;
    }

    /** Puts a blob file where the mirror would, without telling the index (a file the index lacks). */
    Digest putByHand(int n, int seed) throws IOException {
        byte[] b = bytes(n, seed);
        Digest d = Digest.of("sha256", b);
        Path p = StorageScan.fanOut(root.resolve("blobs"), d);
        Files.createDirectories(p.getParent());
        Files.write(p, b);
        return d;
    }

    @Test
    void aCleanRestartTakesTheIndexAsItWasWithoutWalkingTheFolders() throws IOException {
        Storage first = open();
        put(first, 10, 1);
        put(first, 20, 2);
        first.close();
        Digest byHand = putByHand(5, 3); // a file that no clean run would leave unindexed

        Storage second = open();
        assertThat(second.indexed()).isDone();
        assertThat(second.storedCount(ContentKind.BLOB)).isEqualTo(2);
        assertThat(second.blobs().storedBytes()).isEqualTo(30);
        assertThat(second.blobs().find(byHand)).as("the folders were not walked").isEmpty();
        assertThat(events.readyItems).isEqualTo(2);
        // A crash now (no close): the next start reconciles, and the file is found.
        Storage third = open();
        assertThat(third.storedCount(ContentKind.BLOB)).isEqualTo(3);
        assertThat(third.blobs().storedBytes()).isEqualTo(35);
        assertThat(third.blobs().find(byHand)).isPresent();
    }

    @Test
    void afterACrashTheIndexIsReconciledWithTheDiskAndItsTotalsAreExact() throws IOException {
        Storage first = open();
        BlobStore.Blob kept = put(first, 10, 1);
        BlobStore.Blob vanished = put(first, 20, 2);
        byte[] mb = "{\"schemaVersion\":2}".getBytes(StandardCharsets.UTF_8);
        Digest md = Digest.of("sha256", mb);
        first.manifests().put(new ManifestStore.Manifest(md, TYPE, mb));
        // The process dies: no close. Meanwhile the disk changes behind the index's back.
        Files.delete(vanished.path());
        Digest byHand = putByHand(7, 3);

        Storage second = openQueued(Storage.Limits.NONE);
        assertThat(second.indexed()).isNotDone();
        assertThat(second.blobs().find(byHand)).as("before the reconciliation reaches it, the disk decides")
                .isPresent();
        upkeep.runAll();
        assertThat(second.indexed()).isDone();
        assertThat(second.storedCount(ContentKind.BLOB)).isEqualTo(2);
        assertThat(second.blobs().storedBytes()).isEqualTo(17);
        assertThat(second.storedCount(ContentKind.MANIFEST)).isEqualTo(1);
        assertThat(second.manifests().storedBytes()).isEqualTo(mb.length);
        assertThat(second.blobs().find(vanished.digest())).isEmpty();
        assertThat(second.blobs().find(kept.digest())).isPresent();
        assertThat(events.readyItems).isEqualTo(3);
    }

    @Test
    void aCrashBetweenTheRowAndTheFileLeavesARowThatIsForgottenNotServed() throws IOException {
        Storage first = open();
        put(first, 10, 1);
        Digest never = Digest.of("sha256", bytes(40, 9));
        // What a commit does first; the process dies before the file is linked.
        first.index().add(new Key(ContentKind.BLOB, never), 40, clock.millis(), true);

        Storage second = openQueued(Storage.Limits.NONE);
        assertThat(second.blobs().storedBytes()).isEqualTo(50); // as the row says, until reconciled
        upkeep.runAll();
        assertThat(second.storedCount(ContentKind.BLOB)).isEqualTo(1);
        assertThat(second.blobs().storedBytes()).isEqualTo(10);
        assertThat(second.blobs().find(never)).isEmpty();
    }

    @Test
    void aRowWhoseFileIsMissingIsForgottenByTheFirstLookupThatNoticesIt() throws IOException {
        Storage s = open();
        BlobStore.Blob b = put(s, 10, 1);
        Files.delete(b.path());
        BlobStore.Blob stale = s.blobs().acquire(b.digest()).orElseThrow();
        assertThat(s.blobs().verify(stale)).as("its file is gone").isFalse();
        s.blobs().release(stale);
        assertThat(s.blobs().find(b.digest())).isEmpty();
        assertThat(s.blobs().storedBytes()).isZero();
    }

    @Test
    void aFolderInUseCannotBeOpenedTwice() throws IOException {
        Storage first = open();
        Path downloading = first.blobs().newTempFile(); // a download under way
        org.assertj.core.api.Assertions.assertThatThrownBy(
                        () -> Storage.open(root, Storage.Limits.NONE, clock, events, upkeep))
                .isInstanceOf(IOException.class).hasMessageContaining("is in use by another mirror process");
        assertThat(downloading).as("the first one's temporary files left alone").exists();
        first.close();
        Storage again = Storage.open(root, Storage.Limits.NONE, clock, events, upkeep);
        again.close();
    }

    @Test
    void anUnreadableIndexIsSetAsideAndTheFoldersIndexedAgain() throws IOException {
        Storage first = open();
        put(first, 10, 1);
        put(first, 20, 2);
        first.close();
        Path db = root.resolve("index/index.db");
        Files.write(db, "this is not a database, it was overwritten".repeat(100).getBytes(StandardCharsets.UTF_8));

        Storage second = open();
        assertThat(second.storedCount(ContentKind.BLOB)).isEqualTo(2);
        assertThat(second.blobs().storedBytes()).isEqualTo(30);
        try (Stream<Path> in = Files.list(root.resolve("index"))) {
            assertThat(in.map(p -> p.getFileName().toString())).anyMatch(n -> n.startsWith("index.db.unreadable-"));
        }
    }

    @Test
    void anIndexOfAnotherSchemaIsSetAsideToo() throws Exception {
        Storage first = open();
        put(first, 10, 1);
        first.close();
        try (Connection c = DriverManager.getConnection("jdbc:sqlite:" + root.resolve("index/index.db"));
             Statement st = c.createStatement()) {
            st.executeUpdate("UPDATE meta SET value = 99 WHERE key = 'schema'");
        }
        Storage second = open();
        assertThat(second.storedCount(ContentKind.BLOB)).isEqualTo(1);
        try (Stream<Path> in = Files.list(root.resolve("index"))) {
            assertThat(in.map(p -> p.getFileName().toString())).anyMatch(n -> n.startsWith("index.db.unreadable-"));
        }
    }

    @Test
    void aReconciliationLeavesOutWhatWasRemovedWhileItRan() throws IOException {
        Storage s = openQueued(Storage.Limits.NONE);
        CacheIndex index = s.index();
        Key k = new Key(ContentKind.BLOB, Digest.of("sha256", bytes(3, 1)));
        // It listed the file, then the file went (a corrupt drop, say) before the batch was written.
        index.reconciling();
        index.remove(k);
        assertThat(index.load(List.of(new CacheIndex.Scanned(k, 3, clock.millis())))).isZero();
        assertThat(index.lookup(k)).isNull();
        assertThat(index.count(ContentKind.BLOB)).isZero();
    }

    @Test
    void anOrphanTypeFileAndLeftoversAreRemovedByTheReconciliation() throws IOException {
        Storage first = open();
        byte[] mb = "{\"schemaVersion\":2}".getBytes(StandardCharsets.UTF_8);
        Digest md = Digest.of("sha256", mb);
        first.manifests().put(new ManifestStore.Manifest(md, TYPE, mb));
        Path dir = root.resolve("manifests/sha256").resolve(md.hex().substring(0, 2));
        Path orphan = Files.writeString(dir.resolve(md.hex().substring(0, 2) + "0".repeat(62) + ".type"), TYPE);
        Path leftover = Files.writeString(dir.resolve(".tmp-0badc0de-1.part"), "half");
        Path foreign = root.resolve("blobs/sha256/ab/README");
        Files.createDirectories(foreign.getParent());
        Files.writeString(foreign, "someone's notes");
        // crash: no close
        Storage second = open();
        assertThat(Files.exists(orphan)).isFalse();
        assertThat(Files.exists(leftover)).isFalse();
        assertThat(Files.exists(foreign)).as("not the mirror's: left alone").isTrue();
        assertThat(Files.exists(dir.resolve(md.hex() + ".type"))).isTrue();
        assertThat(second.manifests().find(md)).isPresent();
    }

    @Test
    void evictionWorksThroughManyBatchesAndKeepsTheTotalsExact() throws IOException {
        Storage s = open(new Storage.Limits(1_000_000, 1_000_000, null, 0));
        List<BlobStore.Blob> all = new ArrayList<>();
        for (int i = 0; i < 1300; i++) { // more than two batches of 500
            all.add(FileBlobStoreTest.put(s.blobs(), ("blob " + i).getBytes(StandardCharsets.UTF_8)));
            clock.advance(Duration.ofMillis(1));
        }
        long total = s.blobs().storedBytes();
        s.close();
        long low = total / 10;
        Storage smaller = open(new Storage.Limits(low + 1, low, null, 0));
        smaller.upkeep();
        assertThat(smaller.blobs().storedBytes()).isLessThanOrEqualTo(low);
        long kept = all.stream().filter(b -> Files.exists(b.path())).count();
        assertThat(smaller.storedCount(ContentKind.BLOB)).isEqualTo(kept);
        assertThat(events.evicted).hasSize((int) (1300 - kept));
        assertThat(kept).isBetween(100L, 140L);
        // The least recently used went: the survivors are the last ones put.
        for (int i = 0; i < 1300; i++) {
            assertThat(Files.exists(all.get(i).path())).as("blob %d", i).isEqualTo(i >= 1300 - kept);
        }
        long sum = 0;
        for (BlobStore.Blob b : all) {
            if (Files.exists(b.path())) {
                sum += Files.size(b.path());
            }
        }
        assertThat(smaller.blobs().storedBytes()).isEqualTo(sum);
    }

    @Test
    void aFileThatCannotBeDeletedKeepsItsRow() throws IOException {
        Storage s = open(new Storage.Limits(100, 60, null, 0));
        BlobStore.Blob a = put(s, 40, 1);
        put(s, 40, 2);
        s.index().deleter(ContentKind.BLOB, d -> {
            throw new IllegalStateException("the file system said no (thrown by the test)");
        });
        put(s, 40, 3); // 120 > 100
        upkeep.runAll();
        assertThat(Files.exists(a.path())).isTrue();
        assertThat(s.blobs().find(a.digest())).isPresent();
        assertThat(s.blobs().storedBytes()).isEqualTo(120);
        assertThat(events.evicted).isEmpty();
    }

    @Test
    void aFailedUpkeepIsReportedAndTheNextOneDoesTheWork() throws IOException {
        AtomicBoolean broken = new AtomicBoolean();
        Storage s = Storage.open(root, new Storage.Limits(100, 60, null, 0), clock, events, upkeep, () -> {
            if (broken.get()) {
                throw new IllegalStateException("statfs failed (thrown by the test)");
            }
            return 1L << 40;
        });
        upkeep.runAll();
        put(s, 40, 1);
        put(s, 40, 2);
        put(s, 40, 3);
        broken.set(true);
        s.upkeep();
        assertThat(events.failures).containsExactly(
                "upkeep: java.lang.IllegalStateException: statfs failed (thrown by the test)");
        assertThat(s.blobs().storedBytes()).isEqualTo(120);
        broken.set(false);
        s.upkeep();
        assertThat(s.blobs().storedBytes()).isEqualTo(40);
    }

    @Test
    void manyNotedUsesAskTheUpkeepToWriteThemAndItDoes() throws Exception {
        AtomicInteger asked = new AtomicInteger();
        Path file = root.resolve("index.db");
        try (CacheIndex index = CacheIndex.open(file, clock, 0, 0, null, events, asked::incrementAndGet)) {
            Key k = new Key(ContentKind.BLOB, Digest.of("sha256", bytes(1, 1)));
            index.add(k, 1, 0, true);
            for (int i = 0; i < 50_001; i++) {
                index.accessed(new Key(ContentKind.BLOB, Digest.of("sha256", ("x" + i).getBytes(StandardCharsets.UTF_8))));
            }
            assertThat(asked.get()).isPositive();
            clock.advance(Duration.ofHours(1));
            index.accessed(k);
            index.writeNotes();
        }
        // The use of the one stored item reached the database; the others had no row to update.
        try (Connection c = DriverManager.getConnection("jdbc:sqlite:" + file);
             Statement st = c.createStatement();
             java.sql.ResultSet rs = st.executeQuery("SELECT access FROM item")) {
            assertThat(rs.next()).isTrue();
            assertThat(rs.getLong(1)).isEqualTo(clock.millis());
        }
    }
}
