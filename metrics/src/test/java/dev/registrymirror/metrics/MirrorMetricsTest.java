package dev.registrymirror.metrics;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;

class MirrorMetricsTest {
    @Test
    void eventsAppearInTheExposition() {
        MirrorMetrics m = MirrorMetrics.create();
        AtomicLong inflight = new AtomicLong(3);
        m.downloadsInFlight(inflight::get);
        m.storedBytes("blob", () -> 1234);
        m.requestServed("blob", "GET", 200, 1_000_000);
        m.requestServed("blob", "GET", 200, 1_000_000);
        m.cacheHit("blob");
        m.cacheMiss("manifest");
        m.staleServed("docker.io", "rate_limited");
        m.bytesFromCache(100);
        m.bytesFromUpstream(50);
        m.upstreamRequest("docker.io", "blob", 307, 2_000_000);
        m.upstreamError("docker.io", "timeout");
        m.upstreamBytes("docker.io", 4096);
        m.rateLimitRemaining("docker.io", 76);
        m.rateLimitRemaining("docker.io", 75);
        m.downloadMemory(() -> 262144, 32 << 20);
        m.downloadPaused("memory");
        java.util.concurrent.atomic.AtomicBoolean ready = new java.util.concurrent.atomic.AtomicBoolean();
        m.storageIndexReady(ready::get);
        m.storageTaskFailed("scan");
        assertThat(m.scrape()).contains("registrymirror_storage_index_ready 0.0");
        ready.set(true);

        String text = m.scrape();
        assertThat(text).contains("registrymirror_storage_index_ready 1.0")
                .contains("registrymirror_storage_task_failures_total{task=\"scan\"} 1.0");
        assertThat(text).contains("registrymirror_requests_seconds_count{method=\"GET\",route=\"blob\",status=\"200\"} 2");
        assertThat(text).contains("registrymirror_cache_hits_total{kind=\"blob\"} 1.0");
        assertThat(text).contains("registrymirror_cache_misses_total{kind=\"manifest\"} 1.0");
        assertThat(text).contains("registrymirror_stale_served_total{reason=\"rate_limited\",upstream=\"docker.io\"} 1.0");
        assertThat(text).contains("registrymirror_served_bytes_total{source=\"cache\"} 100.0");
        assertThat(text).contains("registrymirror_served_bytes_total{source=\"upstream\"} 50.0");
        assertThat(text).contains("registrymirror_upstream_requests_seconds_count{kind=\"blob\",status=\"307\",upstream=\"docker.io\"} 1");
        assertThat(text).contains("registrymirror_upstream_errors_total{reason=\"timeout\",upstream=\"docker.io\"} 1.0");
        assertThat(text).contains("registrymirror_upstream_received_bytes_total{upstream=\"docker.io\"} 4096.0");
        assertThat(text).contains("registrymirror_upstream_ratelimit_remaining{upstream=\"docker.io\"} 75.0");
        assertThat(text).contains("registrymirror_downloads_inflight 3.0");
        assertThat(text).contains("registrymirror_stored_bytes{kind=\"blob\"} 1234.0");
        assertThat(text).contains("registrymirror_download_memory_bytes 262144.0");
        assertThat(text).contains("registrymirror_download_memory_limit_bytes 3.3554432E7");
        assertThat(text).contains("registrymirror_download_pauses_total{reason=\"memory\"} 1.0");
        assertThat(text).doesNotContain("system_cpu_count").doesNotContain("process_cpu_time_ns")
                .contains("system_cpu_processors");
        inflight.set(0);
        assertThat(m.scrape()).contains("registrymirror_downloads_inflight 0.0");
    }

    @Test
    void countersWithKnownLabelsStartAtZero() {
        MirrorMetrics m = MirrorMetrics.create();
        m.startAtZero(java.util.List.of("docker.io", "ghcr.io"));
        m.cacheHit("blob");

        String text = m.scrape();
        assertThat(text).contains("registrymirror_cache_hits_total{kind=\"blob\"} 1.0")
                .contains("registrymirror_cache_hits_total{kind=\"tag\"} 0.0")
                .contains("registrymirror_cache_misses_total{kind=\"manifest\"} 0.0")
                .contains("registrymirror_evictions_total{kind=\"manifest\",reason=\"age\"} 0.0")
                .contains("registrymirror_evicted_bytes_total{kind=\"blob\",reason=\"size\"} 0.0")
                .contains("registrymirror_corrupt_dropped_total{kind=\"blob\"} 0.0")
                .contains("registrymirror_storage_errors_total{reason=\"disk_full\"} 0.0")
                .contains("registrymirror_storage_task_failures_total{task=\"upkeep\"} 0.0")
                .contains("registrymirror_download_pauses_total{reason=\"memory\"} 0.0")
                .contains("registrymirror_blob_passthrough_total 0.0")
                .contains("registrymirror_stale_served_total{reason=\"unreachable\",upstream=\"ghcr.io\"} 0.0")
                .contains("registrymirror_upstream_errors_total{reason=\"tls\",upstream=\"docker.io\"} 0.0")
                .contains("registrymirror_upstream_errors_total{reason=\"digest_mismatch\",upstream=\"ghcr.io\"} 0.0")
                .contains("registrymirror_upstream_retries_total{upstream=\"ghcr.io\"} 0.0")
                .contains("registrymirror_upstream_received_bytes_total{upstream=\"docker.io\"} 0.0")
                // Unknown until an upstream reports it: absent, not 0.
                .doesNotContain("registrymirror_upstream_ratelimit_remaining");
        m.upstreamError("ghcr.io", "tls");
        assertThat(m.scrape()).contains("registrymirror_upstream_errors_total{reason=\"tls\",upstream=\"ghcr.io\"} 1.0");
    }
}
