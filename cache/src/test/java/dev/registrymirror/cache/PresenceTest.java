package dev.registrymirror.cache;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The blobs a cache may hold, known from memory: never "no" for a stored blob, rarely "maybe" for others. */
class PresenceTest {
    @TempDir
    Path root;
    final TestClock clock = new TestClock();
    final ManualExecutor upkeep = new ManualExecutor();
    final RecordingEvents events = new RecordingEvents();

    @Test
    void noStoredDigestIsMissedAndFewOthersAreMaybes() {
        Presence p = new Presence(100_000);
        Random random = new Random(7);
        byte[][] stored = new byte[100_000][32];
        for (byte[] d : stored) {
            random.nextBytes(d);
            p.add(d);
        }
        for (byte[] d : stored) {
            assertThat(p.mightContain(d)).isTrue();
        }
        int maybes = 0;
        byte[] other = new byte[32];
        for (int i = 0; i < 100_000; i++) {
            random.nextBytes(other);
            if (p.mightContain(other)) {
                maybes++;
            }
        }
        assertThat(maybes).as("false maybes in 100,000").isLessThan(300);
    }

    @Test
    void aBlobStoredNowOrInAnEarlierRunIsAMaybeAndOneNeverStoredIsNot() throws IOException {
        Storage storage = Storage.open(root, Storage.Limits.NONE, clock, events, upkeep);
        Digest before = Digest.of("sha256", "never stored".getBytes(StandardCharsets.UTF_8));
        // Until the index has been read, every blob is a maybe.
        assertThat(storage.blobs().mayHold(before)).isTrue();
        upkeep.runAll();
        assertThat(storage.blobs().mayHold(before)).isFalse();

        BlobStore.Blob now = FileBlobStoreTest.put(storage.blobs(), "stored in this run".getBytes(StandardCharsets.UTF_8));
        assertThat(storage.blobs().mayHold(now.digest())).isTrue();
        storage.close();

        // Another run, after a clean stop: the stored blob comes from the index, the other stays a no.
        Storage again = Storage.open(root, Storage.Limits.NONE, clock, events, upkeep);
        upkeep.runAll();
        assertThat(again.blobs().mayHold(now.digest())).isTrue();
        assertThat(again.blobs().find(now.digest())).isPresent();
        assertThat(again.blobs().mayHold(before)).isFalse();
        again.crash();

        // And after a crash, once the folder is reconciled with the index.
        Storage third = Storage.open(root, Storage.Limits.NONE, clock, events, upkeep);
        assertThat(third.blobs().mayHold(before)).isTrue();
        upkeep.runAll();
        assertThat(third.blobs().mayHold(now.digest())).isTrue();
        assertThat(third.blobs().mayHold(before)).isFalse();
        third.close();
    }
}
