package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import java.time.Duration;
import org.junit.jupiter.api.Test;

/** {@code storage.maxSize} and {@code storage.maxAge} through the HTTP API, with their metrics. */
class CacheLimitsTest extends MirrorTestBase {
    private String limits = "";

    @Override
    String storageYaml() {
        return limits;
    }

    @Test
    void overMaxSizeTheLeastRecentlyUsedBlobGoesAndIsFetchedAgainWhenAsked() {
        limits = ", maxSize: 64MiB";
        byte[] a = randomBytes(25 << 20, 1);
        byte[] b = randomBytes(25 << 20, 2);
        byte[] c = randomBytes(25 << 20, 3);
        Digest da = hub.putBlob(a);
        Digest db = hub.putBlob(b);
        Digest dc = hub.putBlob(c);
        startMirror();
        get("/v2/library/alpine/blobs/" + da);
        get("/v2/library/alpine/blobs/" + db);
        assertThat(downloadsLeft()).isZero(); // both stored
        clock.advance(Duration.ofSeconds(1));
        assertThat(get("/v2/library/alpine/blobs/" + da).body()).isEqualTo(a); // a is now used after b
        get("/v2/library/alpine/blobs/" + dc); // 75 MiB > 64 MiB
        assertThat(downloadsLeft()).isZero();
        mirror.storage().upkeep();

        String metrics = mirror.metrics().scrape();
        assertThat(metrics).contains("registrymirror_evictions_total{kind=\"blob\",reason=\"size\"} 1.0")
                .contains("registrymirror_evicted_bytes_total{kind=\"blob\",reason=\"size\"} " + (double) (25 << 20))
                .contains("registrymirror_storage_limit_bytes " + (double) (64L << 20))
                .contains("registrymirror_stored_items{kind=\"blob\"} 2.0")
                .contains("registrymirror_storage_index_ready 1.0")
                .contains("registrymirror_storage_task_failures_total{task=\"upkeep\"} 0.0");
        long fetches = hub.count("cdn", "GET", "/blobs/" + db);
        assertThat(get("/v2/library/alpine/blobs/" + da).body()).isEqualTo(a);
        assertThat(get("/v2/library/alpine/blobs/" + dc).body()).isEqualTo(c);
        assertThat(hub.count("cdn", "GET", "/blobs/")).isEqualTo(3); // a and c were hits
        assertThat(get("/v2/library/alpine/blobs/" + db).body()).isEqualTo(b); // b was evicted: fetched again
        assertThat(hub.count("cdn", "GET", "/blobs/" + db)).isEqualTo(fetches + 1);
    }

    @Test
    void aRangeOutsideAStoredBlobDoesNotKeepItFromEviction() {
        limits = ", maxAge: 7d";
        byte[] blob = randomBytes(1000, 7);
        Digest d = hub.putBlob(blob);
        startMirror();
        assertThat(get("/v2/library/alpine/blobs/" + d).body()).isEqualTo(blob);
        assertThat(downloadsLeft()).isZero();
        var unsatisfiable = get("/v2/library/alpine/blobs/" + d, "Range", "bytes=5000-");
        assertThat(unsatisfiable.statusCode()).isEqualTo(416);
        assertThat(unsatisfiable.headers().firstValue("Content-Range")).hasValue("bytes */1000");
        clock.advance(Duration.ofDays(8));
        mirror.storage().upkeep();
        // The 416 used to leave the blob pinned as if still being sent, so eviction skipped it for good.
        assertThat(mirror.metrics().scrape()).contains("registrymirror_evictions_total{kind=\"blob\",reason=\"age\"} 1.0")
                .contains("registrymirror_stored_items{kind=\"blob\"} 0.0");
    }

    @Test
    void contentNotReadForMaxAgeIsRemoved() {
        limits = ", maxAge: 7d";
        byte[] old = randomBytes(1000, 4);
        byte[] used = randomBytes(1000, 5);
        Digest dOld = hub.putBlob(old);
        Digest dUsed = hub.putBlob(used);
        hub.putImage("library/alpine", "3.19", randomBytes(100, 6));
        startMirror();
        get("/v2/library/alpine/blobs/" + dOld);
        get("/v2/library/alpine/blobs/" + dUsed);
        get("/v2/library/alpine/manifests/3.19", "Accept", TYPES);
        assertThat(downloadsLeft()).isZero(); // stored before the clock moves on
        clock.advance(Duration.ofDays(5));
        get("/v2/library/alpine/blobs/" + dUsed);
        clock.advance(Duration.ofDays(3));
        mirror.storage().upkeep();

        String metrics = mirror.metrics().scrape();
        assertThat(metrics).contains("registrymirror_evictions_total{kind=\"blob\",reason=\"age\"} 1.0")
                .contains("registrymirror_evictions_total{kind=\"manifest\",reason=\"age\"} 1.0");
        long before = hub.count("cdn", "GET", "/blobs/");
        assertThat(get("/v2/library/alpine/blobs/" + dUsed).body()).isEqualTo(used);
        assertThat(hub.count("cdn", "GET", "/blobs/")).isEqualTo(before);
        assertThat(get("/v2/library/alpine/blobs/" + dOld).body()).isEqualTo(old);
        assertThat(hub.count("cdn", "GET", "/blobs/")).isEqualTo(before + 1);
        // The tag survives its manifest: the manifest is simply fetched again.
        assertThat(get("/v2/library/alpine/manifests/3.19", "Accept", TYPES).statusCode()).isEqualTo(200);
    }

    @Test
    void belowMinFreeOnTheRealDiskTheLeastRecentlyUsedGoAndAreFetchedAgainWhenAsked() {
        minFree = "1000TiB"; // more than this disk has: whatever is not being sent must go
        byte[] a = randomBytes(100_000, 7);
        Digest da = hub.putBlob(a);
        startMirror();
        assertThat(get("/v2/library/alpine/blobs/" + da).body()).isEqualTo(a);
        assertThat(downloadsLeft()).isZero();
        mirror.storage().upkeep(); // the commit already asked for one; this one makes the count certain

        String metrics = mirror.metrics().scrape();
        assertThat(metrics).contains("registrymirror_evictions_total{kind=\"blob\",reason=\"disk\"} 1.0")
                .contains("registrymirror_evicted_bytes_total{kind=\"blob\",reason=\"disk\"} 100000.0")
                .contains("registrymirror_stored_items{kind=\"blob\"} 0.0")
                .contains("registrymirror_storage_min_free_bytes " + (double) (1000L << 40));
        assertThat(Exposition.value(metrics, "registrymirror_storage_free_bytes")).isPositive();
        assertThat(get("/v2/library/alpine/blobs/" + da).body()).isEqualTo(a);
        assertThat(hub.count("cdn", "GET", "/blobs/" + da)).isEqualTo(2);
    }
}
