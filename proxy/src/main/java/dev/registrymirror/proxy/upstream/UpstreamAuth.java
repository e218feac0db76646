package dev.registrymirror.proxy.upstream;

import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.vertx.Futures;

import com.github.benmanes.caffeine.cache.AsyncCache;
import com.github.benmanes.caffeine.cache.Caffeine;
import com.github.benmanes.caffeine.cache.Expiry;
import dev.registrymirror.config.MirrorConfig;
import io.vertx.core.Future;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.RequestOptions;
import io.vertx.core.json.JsonObject;
import java.net.URI;
import java.net.URISyntaxException;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.time.Clock;
import java.time.Duration;
import java.util.Base64;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Credentials for one upstream: the {@code Authorization} header to send for a repository.
 *
 * <p>Bearer tokens are fetched from the realm the upstream's challenge names, anonymously or with
 * the configured credentials, and cached per scope until shortly before they expire (Caffeine,
 * ticking on the injected clock). Concurrent requests for one scope share one token fetch. Once a
 * challenge has been seen, tokens are fetched before the first request for a new repository,
 * saving a round trip. With a Basic challenge, the credentials are sent as Basic.
 *
 * <p>The realm is named by the upstream's answer, so a hostile or compromised upstream can name any
 * URL (Distribution's proxy sent its credentials wherever it was told: CVE-2026-33540). So tokens
 * are fetched over HTTPS whenever the upstream is HTTPS, and the configured credentials go only to a
 * realm on a host the operator trusts: the upstream's own host, a well-known pair (Docker Hub's
 * registry and auth.docker.io), or one listed in {@code trustedRealms}. Anonymous token requests may
 * go to any realm; they carry nothing to steal. A refused realm is an {@code UNAUTHORIZED} error that
 * names it, and a log line. Token answers are read up to {@link #MAX_TOKEN_ANSWER} bytes.
 */
final class UpstreamAuth {
    private static final Logger LOG = LoggerFactory.getLogger(UpstreamAuth.class);
    /** Tokens are dropped this long before the upstream says they expire. */
    static final Duration EXPIRY_MARGIN = Duration.ofSeconds(30);
    /** When the token answer gives no lifetime (the spec's default). */
    static final Duration DEFAULT_TOKEN_LIFETIME = Duration.ofSeconds(60);
    /** The largest token answer read (JSON with a token: a few KiB in practice). */
    static final int MAX_TOKEN_ANSWER = 1 << 20;
    /** Registry hosts whose token service is known to live on another host of the same operator. */
    private static final Map<String, Set<String>> KNOWN_REALMS = Map.of(
            "registry-1.docker.io", Set.of("auth.docker.io"),
            "index.docker.io", Set.of("auth.docker.io"),
            "registry.docker.io", Set.of("auth.docker.io"),
            "docker.io", Set.of("auth.docker.io"),
            "registry.gitlab.com", Set.of("gitlab.com"));

    private record Token(String header, Duration lifetime) {
    }

    private final MirrorConfig.Upstream upstream;
    private final UpstreamClient client;
    private final Metrics metrics;
    private final AsyncCache<String, Token> tokens;
    private volatile Challenge challenge;

    /** Reports token fetches (kept apart so tests can count). */
    interface Metrics {
        void tokenFetched(int status, long nanos);
    }

    UpstreamAuth(UpstreamClient client, Clock clock, Metrics metrics) {
        this.upstream = client.upstream();
        this.client = client;
        this.metrics = metrics;
        this.tokens = Caffeine.newBuilder()
                .maximumSize(10_000)
                .ticker(() -> TimeUnit.MILLISECONDS.toNanos(clock.millis()))
                .expireAfter(Expiry.<String, Token>creating((scope, token) -> token.lifetime()))
                .buildAsync();
    }

    /**
     * The header to send before any challenge for this repository, or {@code null} when none is
     * known yet.
     */
    Future<String> authorization(String repository) {
        Challenge c = challenge;
        if (c == null) {
            return Future.succeededFuture(null);
        }
        return forChallenge(c, repository);
    }

    /**
     * The upstream answered 401 with {@code header} although {@code sent} was sent: learn the
     * challenge and produce a fresh header, or fail with {@code UNAUTHORIZED}.
     */
    Future<String> challenged(String header, String repository, String sent) {
        Challenge c = Challenge.parse(header);
        if (c == null) {
            return Future.failedFuture(RegistryError.unauthorized(upstream.name(),
                    "401 without a usable WWW-Authenticate challenge"));
        }
        challenge = c;
        if (sent != null) {
            tokens.synchronous().invalidate(scope(repository));
            if (!c.isBearer()) {
                return Future.failedFuture(RegistryError.unauthorized(upstream.name(), "credentials rejected"));
            }
        }
        return forChallenge(c, repository);
    }

    private Future<String> forChallenge(Challenge c, String repository) {
        if (!c.isBearer()) {
            if (!upstream.hasCredentials()) {
                return Future.failedFuture(RegistryError.unauthorized(upstream.name(),
                        "it asks for a login and no username/password is configured"));
            }
            return Future.succeededFuture(basic());
        }
        String scope = scope(repository);
        CompletableFuture<Token> token = tokens.get(scope, (key, executor) -> fetch(c, key).toCompletionStage()
                .toCompletableFuture());
        // The fetch is shared by every request for this scope, on whatever event loop: each continues on its own.
        return Futures.onCallerContext(Future.fromCompletionStage(token)).map(Token::header);
    }

    /**
     * Why the credentials (or any token request) may not go to {@code realm}, or null when they may.
     */
    private String refusal(URI realm) {
        if (realm.getHost() == null || !("https".equals(realm.getScheme()) || "http".equals(realm.getScheme()))) {
            return "it is not an http(s) URL";
        }
        if ("https".equals(upstream.url().getScheme()) && !"https".equals(realm.getScheme())) {
            return "the upstream is reached over HTTPS and the realm is not";
        }
        if (upstream.hasCredentials() && !trusted(realm)) {
            return "the configured credentials go only to the upstream's own host and trusted realms"
                    + " (add " + hostPort(realm) + " to upstreams[].trustedRealms to allow it)";
        }
        return null;
    }

    private boolean trusted(URI realm) {
        String host = realm.getHost().toLowerCase(Locale.ROOT);
        String upstreamHost = upstream.url().getHost().toLowerCase(Locale.ROOT);
        return host.equals(upstreamHost)
                || KNOWN_REALMS.getOrDefault(upstreamHost, Set.of()).contains(host)
                || upstream.trustedRealms().contains(host) || upstream.trustedRealms().contains(hostPort(realm));
    }

    private static String hostPort(URI uri) {
        String host = uri.getHost().toLowerCase(Locale.ROOT);
        return uri.getPort() >= 0 ? host + ":" + uri.getPort() : host;
    }

    private Future<Token> fetch(Challenge c, String scope) {
        URI realm;
        try {
            realm = new URI(c.realm());
        } catch (URISyntaxException e) {
            realm = null;
        }
        String refused = realm == null ? "it is not a URL" : refusal(realm);
        if (refused != null) {
            client.countError("auth");
            LOG.warn("upstream {}: token realm {} refused: {}", upstream.name(), c.realm(), refused);
            return Future.failedFuture(RegistryError.unauthorized(upstream.name(),
                    "its token realm " + c.realm() + " is refused: " + refused));
        }
        StringBuilder url = new StringBuilder(c.realm());
        url.append(c.realm().contains("?") ? '&' : '?');
        if (c.service() != null) {
            url.append("service=").append(URLEncoder.encode(c.service(), StandardCharsets.UTF_8)).append('&');
        }
        url.append("scope=").append(URLEncoder.encode(scope, StandardCharsets.UTF_8));
        RequestOptions options = new RequestOptions().setMethod(HttpMethod.GET).setAbsoluteURI(url.toString())
                .setConnectTimeout(upstream.connectTimeout().toMillis())
                .setIdleTimeout(upstream.idleTimeout().toMillis())
                .putHeader(HttpHeaders.USER_AGENT, client.userAgent())
                .putHeader(HttpHeaders.ACCEPT, "application/json");
        if (upstream.hasCredentials()) {
            options.putHeader(HttpHeaders.AUTHORIZATION, basic());
        }
        long start = System.nanoTime();
        // Token answers have room of their own: a token is fetched while the exchange that needs it
        // holds room already, and waiting in the same line as that exchange could wait forever.
        return Bodies.withRoom(client.bodyMemory().tokens(), room -> client.client(false).request(options)
                .compose(req -> req.send())
                .compose(resp -> {
                    resp.pause();
                    metrics.tokenFetched(resp.statusCode(), System.nanoTime() - start);
                    return Bodies.read(client, resp, MAX_TOKEN_ANSWER, "token answer", room,
                            bytes -> Future.succeededFuture(Buffer.buffer(bytes))).map(body -> {
                    if (resp.statusCode() == 401 || resp.statusCode() == 403) {
                        throw RegistryError.unauthorized(upstream.name(), "token service answered "
                                + resp.statusCode() + (upstream.hasCredentials()
                                ? " (check the configured username and password)" : ""));
                    }
                    if (resp.statusCode() == 429) {
                        throw RegistryError.tooManyRequests(upstream.name(), resp.getHeader("Retry-After"));
                    }
                    if (resp.statusCode() != 200) {
                        throw RegistryError.badGateway(upstream.name(),
                                "token service answered " + resp.statusCode(), "auth");
                    }
                    JsonObject json;
                    try {
                        json = body.toJsonObject();
                    } catch (RuntimeException e) {
                        throw RegistryError.badGateway(upstream.name(), "token service sent no JSON", "protocol");
                    }
                    String token = json.getString("token", json.getString("access_token"));
                    if (token == null || token.isEmpty()) {
                        throw RegistryError.badGateway(upstream.name(), "token service sent no token", "protocol");
                    }
                    long expiresIn = json.getLong("expires_in", DEFAULT_TOKEN_LIFETIME.toSeconds());
                    Duration lifetime = Duration.ofSeconds(Math.max(expiresIn, 0)).minus(EXPIRY_MARGIN);
                    if (lifetime.compareTo(Duration.ofSeconds(1)) < 0) {
                        lifetime = Duration.ofSeconds(1);
                    }
                    LOG.debug("upstream {}: new token for {} valid {}s", upstream.name(), scope, lifetime.toSeconds());
                    return new Token("Bearer " + token, lifetime);
                    });
                }, err -> {
                    if (err instanceof RegistryError) {
                        return Future.failedFuture(err);
                    }
                    metrics.tokenFetched(0, System.nanoTime() - start);
                    return Future.failedFuture(UpstreamClient.transportError(upstream.name(), "token service", err));
                }));
    }

    private static String scope(String repository) {
        return "repository:" + repository + ":pull";
    }

    private String basic() {
        String pair = upstream.username() + ":" + upstream.password();
        return "Basic " + Base64.getEncoder().encodeToString(pair.getBytes(StandardCharsets.UTF_8));
    }
}
