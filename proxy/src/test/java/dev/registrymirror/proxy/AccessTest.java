package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import at.favre.lib.crypto.bcrypt.BCrypt;
import ch.qos.logback.classic.spi.ILoggingEvent;
import dev.registrymirror.cache.Digest;
import io.vertx.core.json.JsonObject;
import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Base64;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code access:}: users, the token flow, rules, networks, rate limits, and what is never logged. */
class AccessTest extends MirrorTestBase {
    static final String ALICE_PW = "alice-secret-pw";
    static final String BOB_PW = "bob-secret-pw";
    @TempDir
    Path dir;
    Path htpasswd;
    String access;
    byte[] publicLayer;
    byte[] privateLayer;

    static String entry(String user, String password) {
        return user + ":" + new String(BCrypt.with(BCrypt.Version.VERSION_2Y).hash(5, password.toCharArray()),
                StandardCharsets.US_ASCII) + "\n";
    }

    @BeforeEach
    void setUp() throws Exception {
        htpasswd = Files.writeString(dir.resolve("htpasswd"), entry("alice", ALICE_PW) + entry("bob", BOB_PW));
        access = """
                access:
                  users: '%s'
                  rules:
                    - repositories: ["docker.io/private/**"]
                      pull: [alice]
                    - repositories: ["**"]
                      pull: [anonymous]
                """.formatted(htpasswd);
        publicLayer = randomBytes(20_000, 61);
        privateLayer = randomBytes(20_000, 62);
        hub.putImage("library/alpine", "3.19", publicLayer);
        hub.putImage("private/app", "1", privateLayer);
    }

    @AfterEach
    void nothingSecretIsLogged() {
        assertThat(logged.list).extracting(ILoggingEvent::getFormattedMessage)
                .noneMatch(m -> m.contains(ALICE_PW) || m.contains(BOB_PW) || m.contains("Basic ") || m.contains("Bearer ey"));
    }

    @Override
    String topLevelYaml() {
        return "\n" + access;
    }

    static String basic(String user, String password) {
        return "Basic " + Base64.getEncoder().encodeToString((user + ":" + password).getBytes(StandardCharsets.UTF_8));
    }

    private String token(String... authorization) {
        HttpResponse<byte[]> r = get("/token?service=registry-mirror&scope=repository:private/app:pull", authorization);
        assertThat(r.statusCode()).as(body(r)).isEqualTo(200);
        JsonObject t = new JsonObject(body(r));
        assertThat(t.getString("access_token")).isEqualTo(t.getString("token"));
        assertThat(t.getLong("expires_in")).isEqualTo(900);
        return t.getString("token");
    }

    private int pull(String repo, String tag, byte[] layer, String... authorization) {
        String[] h = new String[authorization.length + 2];
        h[0] = "Accept";
        h[1] = TYPES;
        System.arraycopy(authorization, 0, h, 2, authorization.length);
        HttpResponse<byte[]> m = get("/v2/" + repo + "/manifests/" + tag, h);
        if (m.statusCode() != 200) {
            return m.statusCode();
        }
        HttpResponse<byte[]> b = get("/v2/" + repo + "/blobs/" + Digest.of("sha256", layer), authorization);
        if (b.statusCode() == 200) {
            assertThat(b.body()).isEqualTo(layer);
        }
        return b.statusCode();
    }

    @Test
    void anonymousClientsCompleteTheTokenFlowAndPullWhatIsPublic() {
        startMirror();
        HttpResponse<byte[]> base = get("/v2/");
        assertThat(base.statusCode()).isEqualTo(401);
        assertThat(base.headers().firstValue("WWW-Authenticate")).contains("Bearer realm=\"http://127.0.0.1:"
                + mirror.port() + "/token\",service=\"registry-mirror\"");
        String anonymous = token();
        assertThat(get("/v2/", "Authorization", "Bearer " + anonymous).statusCode()).isEqualTo(200);
        assertThat(pull("library/alpine", "3.19", publicLayer, "Authorization", "Bearer " + anonymous)).isEqualTo(200);
        assertThat(pull("library/alpine", "3.19", publicLayer)).as("no token at all: public is public").isEqualTo(200);

        HttpResponse<byte[]> denied = get("/v2/private/app/manifests/1", "Authorization", "Bearer " + anonymous);
        assertThat(denied.statusCode()).isEqualTo(401);
        assertThat(denied.headers().firstValue("WWW-Authenticate").orElse(""))
                .contains("scope=\"repository:private/app:pull\"");
        assertThat(body(denied)).contains("\"code\":\"UNAUTHORIZED\"");
        assertThat(hub.count("registry", "GET", "/private/app/")).as("the upstream was not asked").isZero();
    }

    @Test
    void usersPullWhatTheRulesAllowThemWithBasicCredentialsOrTheirToken() {
        startMirror();
        assertThat(pull("private/app", "1", privateLayer, "Authorization", basic("alice", ALICE_PW))).isEqualTo(200);
        String aliceToken = token("Authorization", basic("alice", ALICE_PW));
        assertThat(pull("private/app", "1", privateLayer, "Authorization", "Bearer " + aliceToken)).isEqualTo(200);

        HttpResponse<byte[]> bob = get("/v2/private/app/manifests/1", "Accept", TYPES, "Authorization", basic("bob", BOB_PW));
        assertThat(bob.statusCode()).isEqualTo(403);
        assertThat(body(bob)).contains("\"code\":\"DENIED\"").contains("bob may not pull docker.io/private/app");
        String bobToken = token("Authorization", basic("bob", BOB_PW));
        assertThat(get("/v2/private/app/blobs/" + Digest.of("sha256", privateLayer), "Authorization", "Bearer " + bobToken)
                .statusCode()).as("nor its blobs, by digest").isEqualTo(403);
        assertThat(pull("library/alpine", "3.19", publicLayer, "Authorization", "Bearer " + bobToken)).isEqualTo(200);

        HttpResponse<byte[]> wrong = get("/v2/private/app/manifests/1", "Accept", TYPES, "Authorization", basic("alice", "nope"));
        assertThat(wrong.statusCode()).isEqualTo(401);
        assertThat(body(wrong)).contains("wrong user name or password");
        assertThat(get("/token", "Authorization", basic("alice", "nope")).statusCode()).isEqualTo(401);
        assertThat(get("/v2/", "Authorization", "Bearer forged.123.abc").statusCode()).isEqualTo(401);

        String scrape = mirror.metrics().scrape();
        assertThat(Exposition.value(scrape, "registrymirror_access_denied_total{reason=\"forbidden\"}")).isEqualTo(2);
        assertThat(Exposition.value(scrape, "registrymirror_access_denied_total{reason=\"bad_credentials\"}")).isEqualTo(3);
        assertThat(logged.list).extracting(ILoggingEvent::getFormattedMessage).anyMatch(m -> m.equals(
                "access: refused GET /v2/private/app/manifests/1 from 127.0.0.1 (bob): a pull of docker.io/private/app (403 DENIED)"));
    }

    @Test
    void theOAuth2PasswordFormOfTheTokenEndpointWorks() {
        startMirror();
        HttpResponse<byte[]> r = send(HttpRequest.newBuilder(URI.create(url("/token"))).POST(HttpRequest.BodyPublishers
                        .ofString("grant_type=password&service=registry-mirror&client_id=containerd&username=alice&password="
                                + ALICE_PW)), "Content-Type", "application/x-www-form-urlencoded");
        assertThat(r.statusCode()).as(body(r)).isEqualTo(200);
        String token = new JsonObject(body(r)).getString("access_token");
        assertThat(pull("private/app", "1", privateLayer, "Authorization", "Bearer " + token)).isEqualTo(200);
    }

    @Test
    void theUsersFileIsReadAgainWhenItChanges() throws Exception {
        startMirror();
        assertThat(pull("private/app", "1", privateLayer, "Authorization", basic("alice", ALICE_PW))).isEqualTo(200);
        Files.writeString(htpasswd, entry("alice", "new-password-1"));
        assertThat(mirror.access().reloadUsers()).isTrue();
        assertThat(get("/v2/private/app/manifests/1", "Accept", TYPES, "Authorization", basic("alice", ALICE_PW))
                .statusCode()).as("the old password, remembered before, is forgotten").isEqualTo(401);
        assertThat(pull("private/app", "1", privateLayer, "Authorization", basic("alice", "new-password-1"))).isEqualTo(200);
        assertThat(get("/v2/", "Authorization", basic("bob", BOB_PW)).statusCode()).isEqualTo(401);

        Files.writeString(htpasswd, "alice:{SHA}notbcrypt\n");
        assertThat(mirror.access().reloadUsers()).isFalse();
        assertThat(pull("private/app", "1", privateLayer, "Authorization", basic("alice", "new-password-1"))).isEqualTo(200);
        assertThat(logged.list).extracting(ILoggingEvent::getFormattedMessage).anyMatch(m -> m.contains(
                "changed but cannot be used (line 1 (alice) is not a bcrypt entry; make it with htpasswd -B)"));
    }

    @Test
    void clientsFromOtherNetworksAreDenied() {
        access = "access:\n  networks: [10.0.0.0/8, 192.168.0.0/16]\n";
        startMirror();
        HttpResponse<byte[]> r = get("/v2/");
        assertThat(r.statusCode()).isEqualTo(403);
        assertThat(body(r)).contains("\"code\":\"DENIED\"").contains("does not serve 127.0.0.1");
        assertThat(get("/metrics").statusCode()).isEqualTo(403);
        assertThat(Exposition.value(mirror.metrics().scrape(), "registrymirror_access_denied_total{reason=\"network\"}"))
                .isEqualTo(2);
    }

    @Test
    void aClientOverItsRequestRateGets429WithRetryAfter() {
        access = "access:\n  requestsPerSecond: 3\n";
        startMirror();
        int limited = 0;
        String retryAfter = null;
        for (int i = 0; i < 12; i++) {
            HttpResponse<byte[]> r = get("/v2/");
            if (r.statusCode() == 429) {
                limited++;
                retryAfter = r.headers().firstValue("Retry-After").orElse(null);
                assertThat(body(r)).contains("TOOMANYREQUESTS");
            }
        }
        assertThat(limited).isGreaterThan(0);
        assertThat(retryAfter).isEqualTo("1");
    }

    @Test
    void metricsCanBeKeptToSomeClients() {
        access = access + "  metrics: [alice]\n";
        startMirror();
        HttpResponse<byte[]> anonymous = get("/metrics");
        assertThat(anonymous.statusCode()).isEqualTo(401);
        assertThat(anonymous.headers().firstValue("WWW-Authenticate").orElse(""))
                .as("a browser prompts for Basic").startsWith("Basic realm=\"registry-mirror\"");
        assertThat(get("/status.json").statusCode()).isEqualTo(401);
        assertThat(get("/status.json", "Authorization", basic("alice", ALICE_PW)).statusCode()).isEqualTo(200);
        assertThat(get("/metrics", "Authorization", basic("bob", BOB_PW)).statusCode()).isEqualTo(403);
        assertThat(get("/metrics", "Authorization", basic("alice", ALICE_PW)).statusCode()).isEqualTo(200);
    }

    @Test
    void contentFetchedForAProtectedRepositoryIsUnknownUnderAnotherNameUnlessItsUpstreamConfirmsIt() {
        Digest privateDigest = Digest.of("sha256", privateLayer);
        hub.blobOnlyIn.put(privateDigest.toString(), "private/app");
        byte[] shared = randomBytes(10_000, 63);
        Digest sharedDigest = Digest.of("sha256", shared);
        hub.putImage("acme/tool", "1", shared); // the same layer is public there too
        startMirror();
        assertThat(pull("private/app", "1", privateLayer, "Authorization", basic("alice", ALICE_PW))).isEqualTo(200);

        // Under a public name, the private layer is unknown: its upstream does not have it there.
        HttpResponse<byte[]> leak = get("/v2/library/alpine/blobs/" + privateDigest);
        assertThat(leak.statusCode()).isEqualTo(404);
        assertThat(body(leak)).contains("BLOB_UNKNOWN");
        assertThat(hub.count("registry", "HEAD", "/library/alpine/blobs/" + privateDigest)).as("asked").isEqualTo(1);
        assertThat(get("/v2/library/alpine/blobs/" + privateDigest, "Authorization", basic("alice", ALICE_PW))
                .statusCode()).as("nor for alice, under that name").isEqualTo(404);

        // A blob the upstream has under the other name too is confirmed once, then served from the cache.
        hub.putImage("private/app", "2", shared);
        assertThat(pull("private/app", "2", shared, "Authorization", basic("alice", ALICE_PW))).isEqualTo(200);
        long cdn = hub.count("cdn", "GET", "/blobs/" + sharedDigest);
        assertThat(get("/v2/acme/tool/blobs/" + sharedDigest).body()).isEqualTo(shared);
        assertThat(get("/v2/acme/tool/blobs/" + sharedDigest).body()).isEqualTo(shared);
        assertThat(hub.count("registry", "HEAD", "/acme/tool/blobs/" + sharedDigest)).as("confirmed once").isEqualTo(1);
        assertThat(hub.count("cdn", "GET", "/blobs/" + sharedDigest)).as("and served from the cache").isEqualTo(cdn);

        // Content first fetched under a public name is public wherever it is asked for.
        assertThat(pull("library/alpine", "3.19", publicLayer)).isEqualTo(200);
        long heads = hub.count("registry", "HEAD", "/blobs/");
        assertThat(get("/v2/acme/other/blobs/" + Digest.of("sha256", publicLayer)).statusCode()).isEqualTo(200);
        assertThat(hub.count("registry", "HEAD", "/blobs/")).isEqualTo(heads);
    }

    @Test
    void aClientOverItsUpstreamFetchesGets429ForMissesWhileOthersAndCachedContentAreServed() {
        access = access + "  upstreamFetchesPerMinute: 2\n";
        for (int i = 0; i < 4; i++) {
            hub.putImage("library/img" + i, "1", randomBytes(1000, 70 + i));
        }
        startMirror();
        // alice: img0's manifest and layer are 2 upstream GETs, then img1's manifest is one too many.
        assertThat(pull("library/img0", "1", randomBytes(1000, 70), "Authorization", basic("alice", ALICE_PW))).isEqualTo(200);
        HttpResponse<byte[]> over = get("/v2/library/img1/manifests/1", "Accept", TYPES, "Authorization", basic("alice", ALICE_PW));
        assertThat(over.statusCode()).isEqualTo(429);
        assertThat(over.headers().firstValue("Retry-After")).isPresent();
        assertThat(body(over)).contains("alice is over 2 upstream fetches per minute");
        assertThat(Exposition.value(mirror.metrics().scrape(), "registrymirror_access_denied_total{reason=\"rate_limited\"}"))
                .isEqualTo(1);
        assertThat(get("/v2/library/img2/manifests/1", "Accept", TYPES, "Authorization", basic("alice", ALICE_PW))
                .statusCode()).isEqualTo(429);
        assertThat(logged.list).extracting(ILoggingEvent::getFormattedMessage)
                .filteredOn(m -> m.startsWith("access: alice is over 2 upstream fetches per minute")).hasSize(1);
        assertThat(pull("library/img0", "1", randomBytes(1000, 70), "Authorization", basic("alice", ALICE_PW)))
                .as("what is cached is still served").isEqualTo(200);
        assertThat(pull("library/img1", "1", randomBytes(1000, 71), "Authorization", basic("bob", BOB_PW)))
                .as("bob has an allowance of his own").isEqualTo(200);
    }

    @Test
    void tokensLastUntilTheirExpiryAndReplicasSharingATokenKeyAcceptEachOthers() {
        dev.registrymirror.proxy.access.Tokens a = new dev.registrymirror.proxy.access.Tokens(clock, "k".repeat(40));
        dev.registrymirror.proxy.access.Tokens b = new dev.registrymirror.proxy.access.Tokens(clock, "k".repeat(40));
        dev.registrymirror.proxy.access.Tokens other = new dev.registrymirror.proxy.access.Tokens(clock, null);
        String t = a.issue("alice");
        assertThat(b.verify(t)).isEqualTo("alice");
        assertThat(other.verify(t)).isNull();
        assertThat(b.verify(t.substring(0, t.length() - 2) + "xx")).isNull();
        clock.advance(java.time.Duration.ofMinutes(16));
        assertThat(b.verify(t)).as("expired").isNull();
    }

    @Test
    void wrongPasswordsFromOneAddressAreThrottledBeforeHashingWhileOtherAddressesLogIn() throws Exception {
        startMirror();
        java.util.List<java.util.concurrent.CompletableFuture<HttpResponse<byte[]>>> flood = new java.util.ArrayList<>();
        for (int i = 0; i < 150; i++) {
            flood.add(getAsync("/v2/", "Authorization", basic("nobody" + i, "wrong-" + i)));
        }
        // Meanwhile alice logs in from another address.
        io.vertx.core.http.HttpClient other = vertx.createHttpClient(new io.vertx.core.http.HttpClientOptions()
                .setLocalAddress("127.0.0.2"));
        int aliceStatus = await(other.request(new io.vertx.core.http.RequestOptions().setHost("127.0.0.1")
                        .setPort(mirror.port()).setURI("/v2/").putHeader("Authorization", basic("alice", ALICE_PW)))
                .compose(r -> r.send()).map(io.vertx.core.http.HttpClientResponse::statusCode));
        assertThat(aliceStatus).as("another address is not throttled").isEqualTo(200);
        java.util.Map<Integer, Long> statuses = flood.stream().map(f -> join(f))
                .collect(java.util.stream.Collectors.groupingBy(HttpResponse::statusCode, java.util.stream.Collectors.counting()));
        assertThat(statuses.getOrDefault(401, 0L)).as("checked (access.failedLoginsPerMinute, 10 by default): " + statuses)
                .isLessThanOrEqualTo(10);
        assertThat(statuses.getOrDefault(429, 0L)).as("refused without a check: " + statuses).isGreaterThanOrEqualTo(140);
        HttpResponse<byte[]> refused = flood.stream().map(f -> join(f)).filter(r -> r.statusCode() == 429).findFirst().orElseThrow();
        assertThat(refused.headers().firstValue("Retry-After")).isPresent();
        assertThat(body(refused)).contains("TOOMANYREQUESTS").contains("too many failed logins from 127.0.0.1");
        assertThat(get("/token", "Authorization", basic("bob", BOB_PW)).statusCode())
                .as("the token endpoint shares the throttle").isEqualTo(429);
        assertThat(get("/token", "Authorization", basic("alice", ALICE_PW)).statusCode())
                .as("a password checked lately needs no check").isEqualTo(200);
        assertThat(Exposition.value(mirror.metrics().scrape(), "registrymirror_access_denied_total{reason=\"throttled\"}"))
                .isGreaterThanOrEqualTo(140);
        assertThat(logged.list).extracting(ILoggingEvent::getFormattedMessage)
                .filteredOn(m -> m.contains("too many failed logins")).as("one line a minute per address").hasSize(1);
        await(other.close());
    }

    @Test
    void aRemovedUsersTokenIsRefusedOnceTheFileIsReadAgain() throws Exception {
        startMirror();
        String aliceToken = token("Authorization", basic("alice", ALICE_PW));
        assertThat(pull("private/app", "1", privateLayer, "Authorization", "Bearer " + aliceToken)).isEqualTo(200);
        Files.writeString(htpasswd, entry("bob", BOB_PW));
        assertThat(mirror.access().reloadUsers()).isTrue();
        HttpResponse<byte[]> r = get("/v2/private/app/manifests/1", "Accept", TYPES, "Authorization", "Bearer " + aliceToken);
        assertThat(r.statusCode()).isEqualTo(401);
        assertThat(body(r)).contains("invalid or expired");
    }

    @Test
    void theStatusPageShowsEachCallerOnlyWhatItMayPull() {
        startMirror();
        assertThat(pull("private/app", "1", privateLayer, "Authorization", basic("alice", ALICE_PW))).isEqualTo(200);
        assertThat(pull("library/alpine", "3.19", publicLayer)).isEqualTo(200);
        assertThat(downloadsLeft()).as("the pulls' downloads have ended").isZero();
        byte[] secretLayer = randomBytes(30_000, 64);
        hub.putImage("private/app", "2", secretLayer);
        hub.holdBlobAnswers = io.vertx.core.Promise.promise();
        java.util.concurrent.CompletableFuture<HttpResponse<byte[]>> downloading = getAsync("/v2/private/app/blobs/"
                + Digest.of("sha256", secretLayer), "Authorization", basic("alice", ALICE_PW));
        awaitTrue("the private download is under way", () -> mirror.downloadsInFlight() == 1);

        JsonObject anonymous = new JsonObject(body(get("/status.json")));
        assertThat(anonymous.encode()).doesNotContain("private/app").doesNotContain(Digest.of("sha256", secretLayer).toString());
        assertThat(anonymous.getJsonArray("topRepositories").encode()).contains("docker.io/library/alpine");
        assertThat(anonymous.getJsonArray("downloads")).isEmpty();
        JsonObject alice = new JsonObject(body(get("/status.json", "Authorization", basic("alice", ALICE_PW))));
        assertThat(alice.getJsonArray("topRepositories").encode()).contains("docker.io/private/app");
        assertThat(alice.getJsonArray("downloads").encode()).contains("docker.io/private/app");

        hub.holdBlobAnswers.complete();
        assertThat(join(downloading).body()).isEqualTo(secretLayer);
    }
}
