package dev.registrymirror.cache;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Nothing the storage's own thread does fails silently. */
class StorageFailureTest {
    @TempDir
    Path root;
    final RecordingEvents events = new RecordingEvents();
    final TestClock clock = new TestClock();

    @Test
    void anErrorInTheScanReachesTheOwnerInsteadOfVanishingInTheExecutor() throws Exception {
        ExecutorService executor = Executors.newSingleThreadScheduledExecutor(); // as in production
        try {
            Storage.FreeSpace outOfMemory = () -> {
                throw new OutOfMemoryError("Java heap space (thrown by the test)");
            };
            Storage s = Storage.open(root, Storage.Limits.NONE, clock, events, executor, outOfMemory);
            // The scheduled executor used to keep the Error in a future nobody reads: no log, no report.
            assertThat(events.failures.poll(10, TimeUnit.SECONDS))
                    .isEqualTo("scan: java.lang.OutOfMemoryError: Java heap space (thrown by the test)");
            assertThat(s.indexed()).isNotDone();
        } finally {
            executor.shutdownNow();
        }
    }

    @Test
    void aFailedScanIsReportedAndTriedAgain() throws IOException {
        Path blob = root.resolve("blobs/sha256/ab/ab" + "0".repeat(62));
        Files.createDirectories(blob.getParent());
        Files.write(blob, new byte[10]);
        AtomicInteger calls = new AtomicInteger();
        Storage.FreeSpace failsOnce = () -> {
            if (calls.getAndIncrement() == 0) {
                throw new IllegalStateException("statfs failed (thrown by the test)");
            }
            return 1L << 40;
        };
        ManualExecutor upkeep = new ManualExecutor();
        Storage s = Storage.open(root, Storage.Limits.NONE, clock, events, upkeep, failsOnce);
        upkeep.runAll();
        assertThat(events.failures).containsExactly("scan: java.lang.IllegalStateException: statfs failed (thrown by the test)");
        // It used to give up: no index, no eviction until a restart.
        assertThat(s.indexed()).isCompleted();
        assertThat(s.storedCount(ContentKind.BLOB)).isEqualTo(1);
    }
}
