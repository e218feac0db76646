package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import java.io.IOException;
import java.io.InputStream;
import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * Every upstream fault the issue names, each with several clients sharing one download: each
 * client gets an error or a broken connection (never a clean end of a short body), nothing is
 * cached, and the next request fetches again and succeeds.
 */
class FaultTest extends MirrorTestBase {
    static final int CLIENTS = 4;

    enum Case {
        CONNECTION_REFUSED, DROPPED_MID_BLOB, STALLED_MID_BLOB, WRONG_BYTES, STATUS_500, STATUS_429, SLOW_TOKEN
    }

    {
        connectTimeout = "1s";
        idleTimeout = "1s";
    }

    /** What one client saw. */
    record Outcome(int status, String body, boolean broken, byte[] bytes) {
    }

    @ParameterizedTest
    @EnumSource(Case.class)
    void everyClientFailsCleanlyNothingIsCachedAndTheNextRequestFetchesAgain(Case fault) throws Exception {
        byte[] layer = randomBytes(300_000, fault.ordinal());
        Digest d = hub.putBlob(layer);
        startMirror();
        inject(fault);
        long cdnBefore = hub.count("cdn", "GET", "/blobs/");

        List<CompletableFuture<Outcome>> clients = new ArrayList<>();
        for (int i = 0; i < CLIENTS; i++) {
            clients.add(CompletableFuture.supplyAsync(() -> fetch("/v2/library/alpine/blobs/" + d)));
        }
        for (CompletableFuture<Outcome> c : clients) {
            Outcome o = c.get(20, TimeUnit.SECONDS); // followers fail too, they do not hang
            if (o.broken()) {
                continue;
            }
            assertThat(o.status()).as("a clean answer must be an error").isNotEqualTo(200);
            assertThat(o.body()).contains("\"errors\"").contains("docker.io");
            switch (fault) {
                case CONNECTION_REFUSED, SLOW_TOKEN -> assertThat(o.status()).isEqualTo(503);
                case STATUS_500 -> assertThat(o.status()).isEqualTo(502);
                case STATUS_429 -> assertThat(o.status()).isEqualTo(429);
                default -> assertThat(o.status()).isBetween(500, 599);
            }
        }
        if (fault == Case.DROPPED_MID_BLOB || fault == Case.STALLED_MID_BLOB || fault == Case.WRONG_BYTES) {
            // Bytes had gone out: one download, no silent retry.
            assertThat(hub.count("cdn", "GET", "/blobs/") - cdnBefore).isEqualTo(1);
        }
        if (fault == Case.WRONG_BYTES) {
            // Found once, by the download's file as it hashed what it wrote, and counted as the upstream's fault.
            assertThat(Exposition.value(mirror.metrics().scrape(),
                    "registrymirror_upstream_errors_total{reason=\"digest_mismatch\",upstream=\"docker.io\"}"))
                    .isEqualTo(1.0);
        }
        assertThat(storedBlobs()).isEmpty();
        assertThat(tempFiles()).isEmpty();
        assertThat(mirror.downloadsInFlight()).isZero();

        clear(fault);
        long before = hub.count("cdn", "GET", "/blobs/");
        HttpResponse<byte[]> again = get("/v2/library/alpine/blobs/" + d);
        assertThat(again.statusCode()).isEqualTo(200);
        assertThat(again.body()).isEqualTo(layer);
        assertThat(hub.count("cdn", "GET", "/blobs/")).isEqualTo(before + 1);
        assertThat(storedBlobs()).hasSize(1);
    }

    private void inject(Case fault) {
        switch (fault) {
            case CONNECTION_REFUSED -> await(hub.stopRegistry());
            case DROPPED_MID_BLOB -> hub.fault = FakeHub.Fault.DROP_MID_BODY;
            case STALLED_MID_BLOB -> hub.fault = FakeHub.Fault.STALL_MID_BODY;
            case WRONG_BYTES -> hub.fault = FakeHub.Fault.WRONG_BYTES;
            case STATUS_500 -> hub.fault = FakeHub.Fault.STATUS_500;
            case STATUS_429 -> hub.fault = FakeHub.Fault.STATUS_429;
            case SLOW_TOKEN -> hub.tokenDelayMillis = 3000;
        }
        hub.faultWhen = s -> !s.server().equals("auth");
    }

    private void clear(Case fault) {
        if (fault == Case.CONNECTION_REFUSED) {
            await(hub.restartRegistry());
        }
        hub.fault = FakeHub.Fault.NONE;
        hub.tokenDelayMillis = 0;
    }

    @Test
    void aFailureBeforeAnyByteIsRetriedWithBackoff() {
        byte[] layer = randomBytes(50_000, 99);
        Digest d = hub.putBlob(layer);
        startMirror();
        hub.fault = FakeHub.Fault.STATUS_500;
        hub.faultWhen = s -> s.server().equals("cdn") && hub.count("cdn", "GET", "/blobs/") == 1;
        HttpResponse<byte[]> r = get("/v2/library/alpine/blobs/" + d);
        assertThat(r.statusCode()).isEqualTo(200);
        assertThat(r.body()).isEqualTo(layer);
        assertThat(hub.count("cdn", "GET", "/blobs/")).isEqualTo(2);
        assertThat(mirror.metrics().scrape()).contains("registrymirror_upstream_retries_total{upstream=\"docker.io\"} 1.0");
    }

    @Test
    void retriesStopAtTheConfiguredNumber() {
        Digest d = hub.putBlob(randomBytes(1000, 98));
        startMirror(); // retries: 1
        hub.fault = FakeHub.Fault.STATUS_500;
        hub.faultWhen = s -> s.server().equals("cdn");
        assertThat(get("/v2/library/alpine/blobs/" + d).statusCode()).isEqualTo(502);
        assertThat(hub.count("cdn", "GET", "/blobs/")).isEqualTo(2);
    }

    /** A GET that reports a broken connection instead of throwing, and never accepts a short body. */
    Outcome fetch(String path) {
        HttpRequest req = HttpRequest.newBuilder(URI.create(url(path))).timeout(Duration.ofSeconds(15)).GET().build();
        try {
            HttpResponse<InputStream> r = http.send(req, HttpResponse.BodyHandlers.ofInputStream());
            try (InputStream in = r.body()) {
                byte[] bytes = in.readAllBytes();
                long declared = r.headers().firstValueAsLong("Content-Length").orElse(-1);
                if (declared >= 0) {
                    assertThat(bytes.length).as("a clean end must carry every declared byte").isEqualTo(declared);
                }
                return new Outcome(r.statusCode(), new String(bytes, java.nio.charset.StandardCharsets.UTF_8),
                        false, bytes);
            }
        } catch (IOException e) {
            return new Outcome(0, "", true, null);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException(e);
        }
    }

}
