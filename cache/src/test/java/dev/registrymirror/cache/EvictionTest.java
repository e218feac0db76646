package dev.registrymirror.cache;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.time.Duration;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class EvictionTest {
    static final String TYPE = "application/vnd.oci.image.manifest.v1+json";

    @TempDir
    Path root;
    final TestClock clock = new TestClock();
    final ManualExecutor upkeep = new ManualExecutor();
    final RecordingEvents events = new RecordingEvents();

    /** The storage opened last: opening the folder again makes it crash first, unless it was closed. */
    Storage last;

    Storage open(long max, long low, Duration maxAge) throws IOException {
        if (last != null) {
            last.crash();
        }
        Storage s = Storage.open(root, new Storage.Limits(max, low, maxAge, 0), clock, events, upkeep);
        last = s;
        upkeep.runAll();
        return s;
    }

    /** The free space the storage opened by {@link #openWithMinFree} sees. */
    final AtomicLong free = new AtomicLong(1000);

    Storage openWithMinFree(long minFree) throws IOException {
        Storage s = Storage.open(root, new Storage.Limits(0, 0, null, minFree), clock, events, upkeep, free::get);
        upkeep.runAll();
        return s;
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

    @Test
    void overMaxSizeTheLeastRecentlyUsedGoDownToTheLowWatermark() throws IOException {
        Storage s = open(100, 60, null);
        BlobStore.Blob a = put(s, 30, 1);
        BlobStore.Blob b = put(s, 30, 2);
        BlobStore.Blob c = put(s, 30, 3);
        s.blobs().find(a.digest()); // a is now more recent than b and c
        clock.advance(Duration.ofSeconds(1));
        upkeep.runAll();
        assertThat(events.evicted).isEmpty(); // 90 <= 100

        BlobStore.Blob d = put(s, 30, 4); // 120 > 100: evict b, then c (down to 60)
        upkeep.runAll();
        assertThat(events.evicted).containsExactly("blob/size/30", "blob/size/30");
        assertThat(s.blobs().find(b.digest())).isEmpty();
        assertThat(s.blobs().find(c.digest())).isEmpty();
        assertThat(indexed(s, b.digest())).isFalse();
        assertThat(indexed(s, a.digest())).isTrue();
        assertThat(Files.exists(b.path())).isFalse();
        assertThat(s.blobs().find(a.digest())).isPresent();
        assertThat(s.blobs().find(d.digest())).isPresent();
        assertThat(s.blobs().storedBytes()).isEqualTo(60);
    }

    @Test
    void aBlobBeingSentIsNotEvictedUntilReleased() throws IOException {
        Storage s = open(100, 80, null);
        BlobStore.Blob a = put(s, 50, 1);
        BlobStore.Blob sending = s.blobs().acquire(a.digest()).orElseThrow();
        // a is now the most recent; make it the eldest again so it would be the first victim
        BlobStore.Blob b = put(s, 30, 2);
        s.blobs().find(b.digest());
        BlobStore.Blob c = put(s, 30, 3);
        upkeep.runAll();
        assertThat(Files.exists(a.path())).isTrue();
        assertThat(s.blobs().find(b.digest())).isEmpty(); // the next one in line went instead

        s.blobs().release(sending);
        put(s, 30, 4);
        upkeep.runAll();
        assertThat(Files.exists(a.path())).isFalse();
        assertThat(s.blobs().find(c.digest())).isPresent();
    }

    @Test
    void manifestsAreEvictedFromDiskAndMemory() throws IOException {
        Storage s = open(100, 60, null);
        byte[] mb = ("{\"schemaVersion\":2,\"pad\":\"" + "x".repeat(40) + "\"}").getBytes(StandardCharsets.UTF_8);
        Digest md = Digest.of("sha256", mb);
        s.manifests().put(new ManifestStore.Manifest(md, TYPE, mb));
        clock.advance(Duration.ofSeconds(1));
        put(s, 60, 1);
        upkeep.runAll();
        assertThat(events.evicted).containsExactly("manifest/size/" + mb.length);
        assertThat(s.manifests().cached(md)).isEmpty();
        assertThat(s.manifests().find(md)).isEmpty();
        assertThat(s.manifests().storedBytes()).isZero();
    }

    @Test
    void maxAgeRemovesWhatWasNotReadForThatLong() throws IOException {
        Storage s = open(0, 0, Duration.ofHours(24));
        BlobStore.Blob old = put(s, 10, 1);
        BlobStore.Blob read = put(s, 10, 2);
        byte[] mb = "{\"schemaVersion\":2}".getBytes(StandardCharsets.UTF_8);
        Digest md = Digest.of("sha256", mb);
        s.manifests().put(new ManifestStore.Manifest(md, TYPE, mb));
        clock.advance(Duration.ofHours(20));
        s.blobs().find(read.digest());
        s.manifests().cached(md); // a read from memory, on an event loop, counts too
        clock.advance(Duration.ofHours(5));
        upkeep.runAll();
        s.upkeep();
        assertThat(events.evicted).containsExactly("blob/age/10");
        assertThat(s.blobs().find(old.digest())).isEmpty();
        assertThat(s.blobs().find(read.digest())).isPresent();
        assertThat(s.manifests().cached(md)).isPresent();
    }

    @Test
    void afterARestartTheOrderOfLastUseComesFromTheIndex() throws IOException {
        Storage first = open(0, 0, null);
        BlobStore.Blob a = put(first, 40, 1);
        BlobStore.Blob b = put(first, 40, 2);
        first.blobs().find(a.digest()); // a was used after b; noted in memory, written when the index closes
        first.close();
        Files.setLastModifiedTime(a.path(), FileTime.fromMillis(clock.millis() - 3_600_000)); // the files disagree

        Storage s = open(100, 80, null);
        put(s, 40, 3);
        upkeep.runAll();
        assertThat(s.blobs().find(b.digest())).isEmpty();
        assertThat(s.blobs().find(a.digest())).isPresent();
    }

    @Test
    void onAFirstStartTheOrderOfLastUseComesFromTheFiles() throws IOException {
        Storage first = open(0, 0, null);
        BlobStore.Blob a = put(first, 40, 1);
        BlobStore.Blob b = put(first, 40, 2);
        first.close();
        StorageScan.deleteTree(root.resolve("index")); // as a cache folder written before there was an index
        // a was used after b: its modification time says so
        Files.setLastModifiedTime(b.path(), FileTime.fromMillis(clock.millis() - 3_600_000));
        Files.setLastModifiedTime(a.path(), FileTime.fromMillis(clock.millis() - 60_000));

        Storage s = open(100, 80, null);
        put(s, 40, 3);
        upkeep.runAll();
        assertThat(s.blobs().find(b.digest())).isEmpty();
        assertThat(s.blobs().find(a.digest())).isPresent();
    }

    @Test
    void leftoverTemporaryFilesOfManifestsAndTagsAreRemoved() throws IOException {
        Storage s = open(0, 0, null);
        byte[] mb = "{\"schemaVersion\":2}".getBytes(StandardCharsets.UTF_8);
        Digest md = Digest.of("sha256", mb);
        s.manifests().put(new ManifestStore.Manifest(md, TYPE, mb));
        TagStore.TagKey key = new TagStore.TagKey("docker.io", "library/alpine", "3");
        s.tags().put(key, new TagStore.TagEntry(md, TYPE, mb.length, clock.instant()));
        Path manifestDir = root.resolve("manifests/sha256").resolve(md.hex().substring(0, 2));
        Path crashed = Files.writeString(manifestDir.resolve(".tmp-0badc0de-123.part"), "half");
        Path tagCrashed = Files.writeString(root.resolve("tags/docker.io/library/alpine/_tags/.tmp-1-2.part"), "x");

        Storage reopened = open(0, 0, null);
        assertThat(Files.exists(crashed)).isFalse();
        assertThat(Files.exists(tagCrashed)).isFalse();
        assertThat(reopened.manifests().find(md)).isPresent();
        assertThat(reopened.tags().find(key)).isPresent();
        assertThat(reopened.manifests().storedBytes()).isEqualTo(mb.length);
    }

    @Test
    void belowMinFreeTheLeastRecentlyUsedGoUntilATenthMoreThanThatIsFree() throws IOException {
        Storage s = openWithMinFree(100);
        BlobStore.Blob a = put(s, 10, 1);
        BlobStore.Blob b = put(s, 10, 2);
        BlobStore.Blob c = put(s, 10, 3);
        BlobStore.Blob d = put(s, 10, 4);
        BlobStore.Blob e = put(s, 10, 5);
        s.blobs().find(a.digest()); // a is now more recent than b to e
        clock.advance(Duration.ofSeconds(1));
        upkeep.runAll();
        assertThat(events.evicted).isEmpty();

        free.set(95); // 5 short of 100, and room is made up to 110: 15 bytes, so two blobs go
        BlobStore.Blob f = put(s, 10, 6); // the commit finds the disk short and asks for an upkeep
        upkeep.runAll();
        assertThat(events.evicted).containsExactly("blob/disk/10", "blob/disk/10");
        assertThat(s.blobs().find(b.digest())).isEmpty();
        assertThat(s.blobs().find(c.digest())).isEmpty();
        assertThat(Files.exists(b.path())).isFalse();
        assertThat(s.lastFreeSpace()).isEqualTo(95);

        free.set(80); // a download starting looks at the free space, which asks for an upkeep too
        assertThat(s.blobs().usableSpace()).isEqualTo(80);
        upkeep.runAll();
        assertThat(events.evicted).hasSize(5); // 30 bytes more: d, e, then a
        assertThat(s.blobs().find(d.digest())).isEmpty();
        assertThat(s.blobs().find(e.digest())).isEmpty();
        assertThat(s.blobs().find(a.digest())).isEmpty();
        assertThat(s.blobs().find(f.digest())).isPresent();

        free.set(500);
        s.upkeep();
        assertThat(events.evicted).hasSize(5);
    }

    @Test
    void belowMinFreeContentBeingSentStaysAndWhatIsLeftIsAllThatGoes() throws IOException {
        Storage s = openWithMinFree(100);
        BlobStore.Blob a = put(s, 30, 1);
        BlobStore.Blob b = put(s, 30, 2);
        BlobStore.Blob sending = s.blobs().acquire(a.digest()).orElseThrow();
        free.set(0); // other files filled the disk: more is needed than the cache holds
        s.upkeep();
        assertThat(events.evicted).containsExactly("blob/disk/30");
        assertThat(s.blobs().find(b.digest())).isEmpty();
        assertThat(Files.exists(a.path())).isTrue();
        s.blobs().release(sending);
        s.upkeep();
        assertThat(events.evicted).containsExactly("blob/disk/30", "blob/disk/30");
        assertThat(s.blobs().storedBytes()).isZero();
    }

    @Test
    void withoutMinFreeNothingIsEvictedForTheDiskAndTheFreeSpaceIsStillReported() throws IOException {
        Storage s = Storage.open(root, new Storage.Limits(0, 0, null, 0), clock, events, upkeep, () -> 7);
        upkeep.runAll();
        assertThat(s.lastFreeSpace()).isEqualTo(7); // read by the start-up scan
        put(s, 30, 1);
        upkeep.runAll();
        s.upkeep();
        assertThat(events.evicted).isEmpty();
        assertThat(s.blobs().usableSpace()).isEqualTo(7);
        upkeep.runAll();
        assertThat(events.evicted).isEmpty();
    }

    @Test
    void whenTheFreeSpaceCannotBeReadMaxSizeIsStillKept() throws IOException {
        Storage s = Storage.open(root, new Storage.Limits(100, 60, null, 1000), clock, events, upkeep, () -> {
            throw new IOException("statvfs failed");
        });
        upkeep.runAll();
        BlobStore.Blob a = put(s, 40, 1);
        put(s, 40, 2);
        put(s, 40, 3); // 120 > 100
        upkeep.runAll();
        assertThat(events.evicted).containsExactly("blob/size/40", "blob/size/40");
        assertThat(s.blobs().find(a.digest())).isEmpty();
        assertThat(s.lastFreeSpace()).isEqualTo(-1);
    }

    @Test
    void filesAreUnlinkedWithoutTheMonitorThatLookupsNeed() throws Exception {
        Storage s = open(100, 60, null);
        BlobStore.Blob a = put(s, 30, 1);
        BlobStore.Blob b = put(s, 30, 2);
        BlobStore.Blob c = put(s, 30, 3);
        java.util.concurrent.CountDownLatch unlinking = new java.util.concurrent.CountDownLatch(1);
        java.util.concurrent.CountDownLatch release = new java.util.concurrent.CountDownLatch(1);
        // Unlinking a large file takes tens of milliseconds; here it takes until the test says so.
        holdUnlinks(s, digest -> true, unlinking, release);
        put(s, 30, 4); // 120 > 100: a and b must go
        Thread evictor = daemon(upkeep::runAll);
        try {
            assertThat(unlinking.await(10, java.util.concurrent.TimeUnit.SECONDS)).isTrue();
            // A lookup meanwhile is answered at once: it used to wait for the monitor eviction held while unlinking.
            java.util.concurrent.CompletableFuture<java.util.Optional<BlobStore.Blob>> lookup =
                    java.util.concurrent.CompletableFuture.supplyAsync(() -> {
                        try {
                            return s.blobs().find(c.digest());
                        } catch (IOException e) {
                            throw new java.io.UncheckedIOException(e);
                        }
                    });
            assertThat(lookup.get(5, java.util.concurrent.TimeUnit.SECONDS)).isPresent();
            assertThat(indexed(s, a.digest())).as("out of the index before its file goes").isFalse();
        } finally {
            release.countDown();
        }
        evictor.join();
        assertThat(events.evicted).containsExactly("blob/size/30", "blob/size/30");
        assertThat(Files.exists(a.path())).isFalse();
        assertThat(Files.exists(b.path())).isFalse();
        assertThat(s.blobs().storedBytes()).isEqualTo(60);
    }

    @Test
    void aCommitOfABlobBeingUnlinkedWaitsAndThenStandsOnDiskAndInTheIndex() throws Exception {
        Storage s = open(100, 60, null);
        BlobStore.Blob a = put(s, 30, 1);
        put(s, 30, 2);
        put(s, 30, 3);
        java.util.concurrent.CountDownLatch unlinking = new java.util.concurrent.CountDownLatch(1);
        java.util.concurrent.CountDownLatch release = new java.util.concurrent.CountDownLatch(1);
        holdUnlinks(s, digest -> digest.equals(a.digest()), unlinking, release);
        put(s, 30, 4);
        Thread evictor = daemon(upkeep::runAll);
        Thread committer;
        try {
            assertThat(unlinking.await(10, java.util.concurrent.TimeUnit.SECONDS)).isTrue();
            // The same blob is downloaded again while its old file is being unlinked.
            committer = daemon(() -> {
                try {
                    FileBlobStoreTest.put(s.blobs(), bytes(30, 1));
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            });
            long deadline = System.nanoTime() + 10_000_000_000L;
            while (committer.getState() != Thread.State.WAITING && committer.getState() != Thread.State.BLOCKED
                    && committer.isAlive() && System.nanoTime() < deadline) {
                Thread.onSpinWait(); // the commit waits until the unlink is done
            }
        } finally {
            release.countDown();
        }
        evictor.join();
        committer.join();
        assertThat(Files.exists(a.path())).as("the new commit's file, not deleted by the old eviction").isTrue();
        assertThat(s.blobs().find(a.digest())).isPresent();
        assertThat(s.blobs().knownPresent(a.digest())).isTrue();
    }

    /** Whether the index has a row for the blob (a lookup, as a request would make). */
    static boolean indexed(Storage s, Digest d) throws IOException {
        return s.index().lookup(new CacheIndex.Key(ContentKind.BLOB, d)) != null;
    }

    /**
     * Makes the unlink of each blob file that {@code held} selects count down {@code unlinking}, then
     * wait for {@code release} before it deletes the file.
     */
    private static void holdUnlinks(Storage s, java.util.function.Predicate<Digest> held,
                                    java.util.concurrent.CountDownLatch unlinking,
                                    java.util.concurrent.CountDownLatch release) {
        FileBlobStore files = (FileBlobStore) s.blobs();
        s.index().deleter(ContentKind.BLOB, digest -> {
            if (held.test(digest)) {
                unlinking.countDown();
                try {
                    release.await();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
            Files.deleteIfExists(files.pathOf(digest));
        });
    }

    private static Thread daemon(Runnable r) {
        Thread t = new Thread(r);
        t.setDaemon(true);
        t.start();
        return t;
    }
}
