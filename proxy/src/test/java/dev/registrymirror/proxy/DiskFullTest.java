package dev.registrymirror.proxy;

import dev.registrymirror.cache.ForwardingBlobStore;
import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.BlobStore;
import dev.registrymirror.cache.Digest;
import java.io.IOException;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;

/**
 * A full disk, made real: the blob store's temporary files become links to {@code /dev/full}, where
 * every write fails with ENOSPC, or the store reports no free space. Hits keep being served, misses
 * still reach the client (streamed from the upstream without storing), nothing is committed, and
 * the condition is logged and counted.
 */
class DiskFullTest extends MirrorTestBase {
    volatile boolean writesFail;
    volatile boolean reportsNoSpace;

    void startMirrorWithFaultyDisk() {
        mirror = await(Mirror.start(vertx, config(), clock, FaultyDisk::new));
    }

    @Test
    void whenWritesFailMissesAreStreamedWithoutStoringAndHitsStillWork() throws IOException {
        byte[] cachedLayer = randomBytes(100_000, 1);
        Digest cached = hub.putBlob(cachedLayer);
        byte[] newLayer = randomBytes(400_000, 2);
        Digest fresh = hub.putBlob(newLayer);
        startMirrorWithFaultyDisk();
        assertThat(get("/v2/library/alpine/blobs/" + cached).body()).isEqualTo(cachedLayer);
        assertThat(storedBlobs()).hasSize(1); // the client had it once verified; now it is committed

        writesFail = true;
        HttpResponse<byte[]> hit = get("/v2/library/alpine/blobs/" + cached);
        assertThat(hit.statusCode()).isEqualTo(200);
        assertThat(hit.body()).isEqualTo(cachedLayer);

        for (int i = 0; i < 2; i++) {
            HttpResponse<byte[]> miss = get("/v2/library/alpine/blobs/" + fresh);
            assertThat(miss.statusCode()).isEqualTo(200);
            assertThat(miss.body()).isEqualTo(newLayer);
            assertThat(miss.headers().firstValue("Docker-Content-Digest")).contains(fresh.toString());
        }
        assertThat(storedBlobs()).hasSize(1); // only the earlier one
        assertThat(tempFiles()).isEmpty();
        String metrics = mirror.metrics().scrape();
        assertThat(metrics).contains("registrymirror_storage_errors_total{reason=\"disk_full\"} 2.0")
                .contains("registrymirror_blob_passthrough_total 2.0");

        writesFail = false;
        assertThat(get("/v2/library/alpine/blobs/" + fresh).body()).isEqualTo(newLayer);
        assertThat(storedBlobs()).hasSize(2); // stored once there is room again
    }

    @Test
    void whenTheDiskReportsNoRoomNothingIsWrittenAndTheClientIsServed() throws IOException {
        byte[] layer = randomBytes(300_000, 3);
        Digest d = hub.putBlob(layer);
        startMirrorWithFaultyDisk();
        reportsNoSpace = true;
        HttpResponse<byte[]> miss = get("/v2/library/alpine/blobs/" + d);
        assertThat(miss.statusCode()).isEqualTo(200);
        assertThat(miss.body()).isEqualTo(layer);
        assertThat(storedBlobs()).isEmpty();
        assertThat(tempFiles()).isEmpty();
        assertThat(mirror.metrics().scrape()).contains("registrymirror_storage_errors_total{reason=\"disk_full\"} 1.0");
    }

    @Test
    void wrongBytesStreamedWithoutStoringStillBreakTheConnection() throws IOException {
        byte[] layer = randomBytes(300_000, 4);
        Digest d = hub.putBlob(layer);
        startMirrorWithFaultyDisk();
        writesFail = true;
        hub.fault = FakeHub.Fault.WRONG_BYTES;
        hub.faultWhen = s -> s.server().equals("cdn") && hub.count("cdn", "GET", "/blobs/") > 1;
        assertBrokenOrError("/v2/library/alpine/blobs/" + d);
        assertThat(storedBlobs()).isEmpty();
    }

    /** The real store, with a disk that fills up on demand. */
    final class FaultyDisk extends ForwardingBlobStore {
        FaultyDisk(BlobStore real) {
            super(real);
        }

        @Override
        public Path newTempFile() throws IOException {
            Path temp = real.newTempFile();
            if (writesFail) {
                Files.delete(temp);
                Files.createSymbolicLink(temp, Path.of("/dev/full"));
            }
            return temp;
        }

        @Override
        public long usableSpace() throws IOException {
            return reportsNoSpace ? 1024 : real.usableSpace();
        }
    }
}
