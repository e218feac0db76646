package dev.registrymirror.proxy;

import dev.registrymirror.cache.ForwardingBlobStore;
import dev.registrymirror.cache.ContentKind;
import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.BlobStore;
import dev.registrymirror.cache.Digest;
import io.vertx.core.Promise;
import java.io.IOException;
import java.net.http.HttpResponse;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.junit.jupiter.api.Test;

/**
 * Requests under different names share one download of a blob only where that is safe: a download
 * that fails for one name never fails a request made under another, bytes fetched for a protected
 * repository reach another name only once its upstream confirms it, whatever the timing, and a name
 * that merely shared another's download is never recorded as the blob's origin.
 */
class DownloadSharingTest extends MirrorTestBase {
    static final String RULES = """
            access:
              rules:
                - repositories: ["docker.io/private/**"]
                  pull: [alice]
                - repositories: ["**"]
                  pull: [anonymous]
              users: '%s'
            """;
    String access = "";
    @org.junit.jupiter.api.io.TempDir
    java.nio.file.Path dir;

    @Override
    String topLevelYaml() {
        return "\n" + access;
    }

    private void withRules() throws IOException {
        java.nio.file.Path htpasswd = java.nio.file.Files.writeString(dir.resolve("htpasswd"),
                AccessTest.entry("alice", AccessTest.ALICE_PW));
        access = RULES.formatted(htpasswd);
    }

    /** Requests that reached the fake registry with a token (the first of each scope is a 401 without). */
    private long answered(String method, String pathPart) {
        return hub.seen("registry").stream().filter(s -> s.method().equals(method) && s.path().contains(pathPart)
                && s.authorization() != null).count();
    }

    private long blobMisses() {
        return (long) Exposition.value(mirror.metrics().scrape(), "registrymirror_cache_misses_total{kind=\"blob\"}");
    }

    @Test
    void aDownloadThatFailsForOneNameDoesNotFailARequestUnderAnother() {
        byte[] layer = randomBytes(50_000, 1);
        Digest d = hub.putBlob(layer);
        hub.blobOnlyIn.put(d.toString(), "library/good");
        hub.holdWhen = s -> s.path().contains("/library/bad/blobs/");
        hub.holdRequests = Promise.promise();
        startMirror();

        CompletableFuture<HttpResponse<byte[]>> bad = getAsync("/v2/library/bad/blobs/" + d);
        awaitTrue("the wrong name's download asks the upstream",
                () -> hub.count("registry", "GET", "/library/bad/blobs/") == 1);
        CompletableFuture<HttpResponse<byte[]>> good = getAsync("/v2/library/good/blobs/" + d);
        awaitTrue("the right name's request joins the download under way", () -> blobMisses() == 2);
        hub.holdRequests.complete();

        assertThat(join(bad).statusCode()).isEqualTo(404);
        HttpResponse<byte[]> served = join(good);
        assertThat(served.statusCode()).as(body(served)).isEqualTo(200);
        assertThat(served.body()).isEqualTo(layer);
        assertThat(answered("GET", "/library/good/blobs/" + d)).as("fetched under its own name").isEqualTo(1);
        assertThat(downloadsLeft()).isZero();
        assertThat(get("/v2/library/good/blobs/" + d).body()).as("and stored").isEqualTo(layer);
        assertThat(answered("GET", "/library/good/blobs/" + d)).isEqualTo(1);
    }

    @Test
    void aPrivateBlobLookedUpJustBeforeItsDownloadStartsIsNotHandedToAnotherName() throws Exception {
        withRules();
        byte[] secret = randomBytes(40_000, 2);
        Digest d = hub.putBlob(secret);
        hub.blobOnlyIn.put(d.toString(), "private/app");
        hub.holdBlobAnswers = Promise.promise();
        CountDownLatch looking = new CountDownLatch(1);
        CountDownLatch goOn = new CountDownLatch(1);
        AtomicBoolean first = new AtomicBoolean(true);
        // The first lookup of the blob (the anonymous request's) waits until alice's download is under way.
        mirror = await(Mirror.start(vertx, config(), clock, real -> new ForwardingBlobStore(real) {
            @Override
            public boolean mayHold(Digest digest) {
                // Looked up even though it is not stored, as a blob the index may hold is (one evicted
                // since the start, or a false "maybe"): the lookup is what this test holds.
                return true;
            }

            @Override
            public Optional<BlobStore.Blob> acquire(Digest digest) throws IOException {
                if (digest.equals(d) && first.getAndSet(false)) {
                    looking.countDown();
                    try {
                        goOn.await(20, TimeUnit.SECONDS);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                }
                return real.acquire(digest);
            }
        }));

        CompletableFuture<HttpResponse<byte[]>> anonymous = getAsync("/v2/library/alpine/blobs/" + d);
        assertThat(looking.await(20, TimeUnit.SECONDS)).isTrue();
        CompletableFuture<HttpResponse<byte[]>> alice = getAsync("/v2/private/app/blobs/" + d,
                "Authorization", AccessTest.basic("alice", AccessTest.ALICE_PW));
        awaitTrue("alice's download reaches the upstream's storage", () -> hub.count("cdn", "GET", "/blobs/" + d) == 1);
        goOn.countDown();
        hub.holdBlobAnswers.complete();
        HttpResponse<byte[]> refused = join(anonymous);

        assertThat(refused.statusCode()).as("the private blob under a public name").isEqualTo(404);
        assertThat(body(refused)).contains("BLOB_UNKNOWN");
        assertThat(answered("HEAD", "/library/alpine/blobs/" + d)).as("asked under its own name").isEqualTo(1);
        HttpResponse<byte[]> served = join(alice);
        assertThat(served.statusCode()).isEqualTo(200);
        assertThat(served.body()).isEqualTo(secret);
        assertThat(downloadsLeft()).isZero();
        assertThat(mirror.storage().origins(ContentKind.BLOB, d)).containsExactly("docker.io/private/app");
        assertThat(get("/v2/library/alpine/blobs/" + d).statusCode()).as("nor later, from the cache").isEqualTo(404);
    }

    @Test
    void aNameThatSharedAPublicDownloadIsNotRecordedAsAnOrigin() throws Exception {
        withRules();
        byte[] layer = randomBytes(30_000, 3);
        Digest d = hub.putBlob(layer);
        hub.holdBlobAnswers = Promise.promise();
        startMirror();

        CompletableFuture<HttpResponse<byte[]>> first = getAsync("/v2/library/alpine/blobs/" + d);
        awaitTrue("its download reaches the upstream's storage", () -> hub.count("cdn", "GET", "/blobs/" + d) == 1);
        CompletableFuture<HttpResponse<byte[]>> second = getAsync("/v2/acme/tool/blobs/" + d);
        awaitTrue("the second name joins", () -> blobMisses() == 2);
        hub.holdBlobAnswers.complete();
        assertThat(join(first).body()).isEqualTo(layer);
        assertThat(join(second).body()).as("public content is public under any name").isEqualTo(layer);
        assertThat(downloadsLeft()).isZero();
        assertThat(mirror.storage().origins(ContentKind.BLOB, d)).containsExactly("docker.io/library/alpine");
        assertThat(answered("GET", "/blobs/" + d)).as("one download").isEqualTo(1);
    }

    @Test
    void answersThatStoreNothingRecordNoOrigin() throws Exception {
        withRules();
        byte[] layer = randomBytes(10_000, 4);
        Digest d = hub.putBlob(layer);
        startMirror();
        HttpResponse<byte[]> head = head("/v2/library/alpine/blobs/" + d);
        assertThat(head.statusCode()).isEqualTo(200);
        assertThat(answered("HEAD", "/blobs/" + d)).as("answered by the upstream").isEqualTo(1);
        assertThat(mirror.storage().blob(d)).isEmpty();
        assertThat(mirror.storage().origins(ContentKind.BLOB, d)).as("no row for content that is not stored").isEmpty();
    }
}
