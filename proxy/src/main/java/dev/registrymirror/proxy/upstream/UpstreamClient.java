package dev.registrymirror.proxy.upstream;

import dev.registrymirror.proxy.vertx.NettyBuffers;
import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.vertx.Futures;

import dev.registrymirror.cache.Digest;
import dev.registrymirror.config.MirrorConfig;
import dev.registrymirror.metrics.MirrorMetrics;
import io.vertx.core.Future;
import io.vertx.core.MultiMap;
import io.vertx.core.Promise;
import io.vertx.core.Context;
import io.vertx.core.Vertx;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpClient;
import io.vertx.core.http.HttpClientOptions;
import io.vertx.core.http.PoolOptions;
import io.vertx.core.http.HttpClientResponse;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.RequestOptions;
import io.vertx.core.net.TrustOptions;
import java.io.IOException;
import java.io.InputStream;
import java.net.ConnectException;
import java.net.NoRouteToHostException;
import java.net.SocketTimeoutException;
import java.net.URI;
import java.net.UnknownHostException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.security.MessageDigest;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.time.Clock;
import java.util.Objects;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentMap;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import javax.net.ssl.SSLException;
import javax.net.ssl.TrustManagerFactory;
import javax.net.ssl.X509TrustManager;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Talks to one upstream registry: authenticates (see {@link UpstreamAuth}), follows the redirects of
 * blob downloads (sending no {@code Authorization} to another host, never from https to http),
 * times out per the upstream's settings, records metrics, and hands back the final response
 * <em>paused</em>, so the caller decides how to consume the body.
 *
 * <p>Only blobs are redirected by real registries (to a CDN or object store), and only their bytes
 * are checked against a digest. A redirect of anything else (a manifest, a tag list, referrers, a
 * token) is an upstream error: followed, it would let an upstream make the mirror fetch an address
 * inside the LAN and hand the answer to a client.
 */
public final class UpstreamClient implements Sender {
    private static final Logger LOG = LoggerFactory.getLogger(UpstreamClient.class);
    private static final int MAX_REDIRECTS = 5;

    /** The largest piece of a blob's body handed over at once. */
    public static final int BODY_CHUNK_BYTES = 256 * 1024;
    /**
     * The largest piece of any other body (manifests, tag lists, referrers, token answers), which the
     * mirror reads whole. A paused answer goes on buffering up to 16 pieces before its connection stops
     * reading, so this bounds what an answer waiting for room in the {@link BodyMemory} holds:
     * {@link BodyMemory#PAUSED_BYTES}.
     */
    static final int WHOLE_BODY_CHUNK_BYTES = 16 * 1024;

    /** Failures without an answer that a retry may cure. */
    private static final Set<String> RETRYABLE = Set.of("connect", "timeout", "reset");

    private final MirrorConfig.Upstream upstream;
    private final HttpClientOptions options;
    private final HttpClientOptions wholeBodyOptions;
    /** For calls not made on an event loop. */
    /** Connections kept to one upstream host, per client (one per event loop). */
    private static final PoolOptions POOL = new PoolOptions().setHttp1MaxSize(64);
    private final HttpClient shared;
    /**
     * One client per event loop. Vert.x pools connections per client, and a connection belongs to
     * the event loop that opened it: a request made from another loop had every callback, each body
     * chunk included, handed across threads (measured: 2-3 ms more to the first byte of a cold blob).
     * With a client per loop, a download receives, hashes and writes on the loop that owns its
     * connection.
     */
    private final ConcurrentMap<Thread, HttpClient> perLoop = new ConcurrentHashMap<>();
    /** The same for answers read whole, in small pieces (see {@link #WHOLE_BODY_CHUNK_BYTES}). */
    private final ConcurrentMap<Thread, HttpClient> perLoopWhole = new ConcurrentHashMap<>();
    private final UpstreamAuth auth;
    private final MirrorMetrics metrics;
    /** The last outcome of an exchange, for the status page: updated by any event loop, read as a whole. */
    private final java.util.concurrent.atomic.AtomicReference<Health> health =
            new java.util.concurrent.atomic.AtomicReference<>(new Health("unknown", null, null, null, -1));
    private final Clock clock;
    private final Vertx vertx;

    private final BodyMemory bodyMemory;
    private final String userAgent;

    /** @param userAgent what its requests send as {@code User-Agent} ({@code registry-mirror/<version>}) */
    public UpstreamClient(Vertx vertx, MirrorConfig.Upstream upstream, MirrorMetrics metrics, Clock clock,
                          BodyMemory bodyMemory, String userAgent) {
        this.vertx = vertx;
        this.userAgent = userAgent;
        this.bodyMemory = bodyMemory;
        this.clock = clock;
        this.upstream = upstream;
        this.metrics = metrics;
        this.options = new HttpClientOptions()
                .setKeepAlive(true)
                .setConnectTimeout((int) upstream.connectTimeout().toMillis())
                .setIdleTimeout((int) upstream.idleTimeout().toMillis())
                .setIdleTimeoutUnit(TimeUnit.MILLISECONDS)
                .setDecompressionSupported(false)
                // Netty's default cuts bodies into 8 KiB chunks: 32,768 per 256 MiB layer, each a file write.
                .setMaxChunkSize(BODY_CHUNK_BYTES)
                .setReceiveBufferSize(1 << 20)
                .setVerifyHost(true);
        if (upstream.caFile() != null) {
            options.setTrustOptions(TrustOptions.wrap(trustWithExtraCas(upstream)));
        }
        this.wholeBodyOptions = new HttpClientOptions(options).setMaxChunkSize(WHOLE_BODY_CHUNK_BYTES)
                .setReceiveBufferSize(-1);
        this.shared = vertx.createHttpClient(options, POOL);
        this.auth = new UpstreamAuth(this, clock,
                (status, nanos) -> metrics.upstreamRequest(upstream.name(), "token", status, nanos));
    }

    /** What its requests send as {@code User-Agent}. */
    String userAgent() {
        return userAgent;
    }

    /** The memory its answers held whole share with every other upstream's. */
    public BodyMemory bodyMemory() {
        return bodyMemory;
    }

    public MirrorConfig.Upstream upstream() {
        return upstream;
    }

    @Override
    public java.time.Duration idleTimeout() {
        return upstream.idleTimeout();
    }

    @Override
    public String name() {
        return upstream.name();
    }

    /**
     * Sends {@code method path} (path relative to the upstream's base URL, starting {@code /v2/})
     * with the credentials for {@code repository}, following redirects. Fails only when no HTTP
     * answer was had; any status is returned, paused.
     *
     * <p>Nothing has reached the client yet when this is called, so a request that gets no answer
     * (refused, reset, timed out) or a 500, 502, 503 or 504 is sent again, up to the upstream's
     * {@code retries}, after {@code retryBackoff}, four times that, and so on (with jitter). Only
     * GET and HEAD come here, and both are idempotent.
     *
     * @param kind metrics label: manifest, blob, tags, referrers
     */
    public Future<HttpClientResponse> send(HttpMethod method, String path, String repository, MultiMap headers,
                                    String kind) {
        return send(method, URI.create(upstream.url() + path), repository, headers, kind, 0);
    }

    /** {@code GET} or {@code HEAD} of a blob, with the retries of {@link #send}. */
    public Future<HttpClientResponse> blob(HttpMethod method, String repository, Digest digest) {
        MultiMap headers = MultiMap.caseInsensitiveMultiMap().add(HttpHeaders.ACCEPT, "*/*");
        return send(method, "/v2/" + repository + "/blobs/" + digest, repository, headers, "blob");
    }

    /** {@code GET} of bytes {@code first} to {@code last} (inclusive) of a blob, with the retries of {@link #send}. */
    public Future<HttpClientResponse> blobRange(String repository, Digest digest, long first, long last) {
        MultiMap headers = MultiMap.caseInsensitiveMultiMap().add(HttpHeaders.ACCEPT, "*/*")
                .add("Range", "bytes=" + first + "-" + last);
        return send(HttpMethod.GET, "/v2/" + repository + "/blobs/" + digest, repository, headers, "blob");
    }

    /**
     * Like {@link #send(HttpMethod, String, String, MultiMap, String)}, without retries: for
     * questions that have a cached answer to fall back on, which is better served at once.
     */
    public Future<HttpClientResponse> sendOnce(HttpMethod method, String path, String repository, MultiMap headers,
                                        String kind) {
        URI uri = URI.create(upstream.url() + path);
        return send(method, uri, repository, headers, kind, Integer.MAX_VALUE).recover(err ->
                err instanceof RegistryError e && "reset".equals(e.upstreamReason)
                        // Most often a kept-alive connection the upstream had closed (idle, restarting or going
                        // down): asked once more at once, on a new connection, which tells that from an
                        // upstream that is down (then "connect", and a cached answer is served as unreachable).
                        ? send(method, uri, repository, headers, kind, Integer.MAX_VALUE)
                        : Future.failedFuture(err));
    }

    private Future<HttpClientResponse> send(HttpMethod method, URI uri, String repository, MultiMap headers,
                                            String kind, int tries) {
        if (method == HttpMethod.GET) {
            RegistryError over = UpstreamBudget.spend(upstream.name());
            if (over != null) {
                return Future.failedFuture(over);
            }
        }
        return Futures.onCallerContext(attempts(method, uri, repository, headers, kind, tries));
    }

    private Future<HttpClientResponse> attempts(HttpMethod method, URI uri, String repository, MultiMap headers,
                                                String kind, int tries) {
        Future<HttpClientResponse> answer = auth.authorization(repository)
                .compose(authz -> attempt(method, uri, repository, headers, kind, authz, false));
        if (tries >= upstream.retries()) {
            return answer;
        }
        return answer.transform(ar -> {
            String why;
            if (ar.succeeded()) {
                int status = ar.result().statusCode();
                if (status < 500 || status > 504 || status == 501) {
                    return Future.succeededFuture(ar.result());
                }
                discard(ar.result());
                why = "status " + status;
            } else if (ar.cause() instanceof RegistryError e && e.upstreamReason != null
                    && RETRYABLE.contains(e.upstreamReason)) {
                why = e.getMessage();
            } else {
                return Future.failedFuture(ar.cause());
            }
            long delay = backoffMillis(tries);
            LOG.info("upstream {}: {} {} failed ({}); retry {} of {} in {} ms", upstream.name(), method,
                    uri.getPath(), why, tries + 1, upstream.retries(), delay);
            metrics.upstreamRetry(upstream.name());
            Promise<HttpClientResponse> retried = Promise.promise();
            vertx.setTimer(delay, t -> attempts(method, uri, repository, headers, kind, tries + 1).onComplete(retried));
            return retried.future();
        });
    }

    /** The wait before retry {@code tries + 1}: the backoff times 4^tries, give or take 20%. */
    public long backoffMillis(int tries) {
        long base = upstream.retryBackoff().toMillis() << (2 * Math.min(tries, 10));
        return Math.max(1, (long) (base * (0.8 + 0.4 * ThreadLocalRandom.current().nextDouble())));
    }

    private Future<HttpClientResponse> attempt(HttpMethod method, URI uri, String repository, MultiMap headers,
                                               String kind, String authz, boolean retried) {
        return exchange(method, uri, headers, kind, authz, kind.equals("blob"), 0).compose(resp -> {
            if (resp.statusCode() != 401 || !sameOrigin(URI.create(resp.request().absoluteURI()), uri)) {
                return Future.succeededFuture(resp);
            }
            String challenge = resp.getHeader("WWW-Authenticate");
            discard(resp);
            if (retried) {
                return Future.failedFuture(RegistryError.unauthorized(upstream.name(),
                        "still 401 with fresh credentials for " + repository));
            }
            return auth.challenged(challenge, repository, authz)
                    .compose(fresh -> attempt(method, uri, repository, headers, kind, fresh, true));
        });
    }

    private Future<HttpClientResponse> exchange(HttpMethod method, URI uri, MultiMap headers, String kind,
                                                String authz, boolean followRedirects, int hops) {
        RequestOptions options = new RequestOptions()
                .setMethod(method)
                .setAbsoluteURI(uri.toString())
                .setConnectTimeout(upstream.connectTimeout().toMillis())
                .setIdleTimeout(upstream.idleTimeout().toMillis())
                .putHeader(HttpHeaders.USER_AGENT, userAgent);
        if (headers != null) {
            options.getHeaders().addAll(headers);
        }
        if (authz != null) {
            options.putHeader(HttpHeaders.AUTHORIZATION, authz);
        }
        long start = System.nanoTime();
        return client(kind.equals("blob")).request(options).compose(req -> req.send()).compose(resp -> {
            resp.pause();
            metrics.upstreamRequest(upstream.name(), kind, resp.statusCode(), System.nanoTime() - start);
            rateLimit(resp);
            int status = resp.statusCode();
            if (status == 429) {
                noteFailure("rate-limited", "answered 429 Too Many Requests for a " + kind + " request");
            } else if (status >= 500) {
                noteFailure("failing", "answered " + status + " for a " + kind + " request");
            } else {
                noteAnswer();
            }
            String location = resp.getHeader(HttpHeaders.LOCATION);
            boolean redirect = status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
            if (!redirect || location == null) {
                return Future.succeededFuture(resp);
            }
            discard(resp);
            if (!followRedirects) {
                return Future.failedFuture(refusedRedirect("answered " + status + " for a " + kind
                        + " request (a redirect, which registries send for blobs only)"));
            }
            if (hops >= MAX_REDIRECTS) {
                return Future.failedFuture(refusedRedirect("too many redirects"));
            }
            URI next;
            try {
                next = uri.resolve(location);
            } catch (IllegalArgumentException e) {
                return Future.failedFuture(refusedRedirect("redirect to an invalid location"));
            }
            if (next.getHost() == null || !("https".equals(next.getScheme())
                    || ("http".equals(next.getScheme()) && "http".equals(uri.getScheme())))) {
                return Future.failedFuture(refusedRedirect("redirect from " + uri.getScheme() + " to "
                        + next.getScheme() + "://" + next.getHost() + " refused"));
            }
            HttpMethod nextMethod = status == 303 && method != HttpMethod.HEAD ? HttpMethod.GET : method;
            LOG.debug("upstream {}: {} redirected to {}", upstream.name(), uri.getPath(), next.getHost());
            return exchange(nextMethod, next, headers, kind, sameOrigin(next, uri) ? authz : null, true, hops + 1);
        }, err -> {
            metrics.upstreamRequest(upstream.name(), kind, 0, System.nanoTime() - start);
            RegistryError e = transportError(upstream.name(), uri.getHost(), err);
            metrics.upstreamError(upstream.name(), e.upstreamReason);
            noteFailure("unreachable", e.getMessage());
            return Future.failedFuture(e);
        });
    }

    /**
     * An upstream's state as the status page shows it.
     *
     * @param state              {@code unknown} (not asked since start), {@code up} (its last answer was
     *                           one), {@code rate-limited} (a 429), {@code failing} (a 5xx or a bad
     *                           answer), {@code unreachable} (no answer: refused, timed out, TLS)
     * @param lastAnswer         when it last answered (other than a 5xx or 429), or null
     * @param lastError          when it last failed, or null
     * @param lastErrorMessage   how (as clients were told), or null
     * @param rateLimitRemaining pulls left as its {@code RateLimit-Remaining} last said, -1 if it never did
     */
    public record Health(String state, java.time.Instant lastAnswer, java.time.Instant lastError,
                         String lastErrorMessage, long rateLimitRemaining) {
    }

    public Health health() {
        return health.get();
    }

    private void noteAnswer() {
        java.time.Instant now = clock.instant();
        health.updateAndGet(h -> new Health("up", now, h.lastError(), h.lastErrorMessage(), h.rateLimitRemaining()));
    }

    private void noteFailure(String state, String message) {
        java.time.Instant now = clock.instant();
        health.updateAndGet(h -> new Health(state, h.lastAnswer(), now, message, h.rateLimitRemaining()));
    }

    private void rateLimit(HttpClientResponse resp) {
        String remaining = resp.getHeader("ratelimit-remaining");
        if (remaining != null) {
            int semi = remaining.indexOf(';');
            try {
                long left = Long.parseLong((semi >= 0 ? remaining.substring(0, semi) : remaining).trim());
                health.updateAndGet(h -> new Health(h.state(), h.lastAnswer(), h.lastError(), h.lastErrorMessage(), left));
                metrics.rateLimitRemaining(upstream.name(), left);
            } catch (NumberFormatException e) {
                // Not a number: ignore, the header is advisory.
            }
        }
    }

    /**
     * The error for an upstream answer that is not a success: 404 as {@code notFoundCode}, 429 as
     * {@code TOOMANYREQUESTS} with its {@code Retry-After}, 401/403 as {@code UNAUTHORIZED}, the rest
     * as a bad gateway. Discards the body.
     */
    public RegistryError failure(HttpClientResponse resp, String notFoundCode, String what) {
        discard(resp);
        int status = resp.statusCode();
        RegistryError error;
        if (status == 404) {
            error = new RegistryError(404, notFoundCode, what + " not found upstream (" + upstream.name() + ")");
        } else if (status == 429) {
            error = RegistryError.tooManyRequests(upstream.name(), resp.getHeader(HttpHeaders.RETRY_AFTER));
        } else if (status == 401 || status == 403) {
            error = RegistryError.unauthorized(upstream.name(), "answered " + status + " for " + what);
        } else if (status >= 500) {
            error = RegistryError.badGateway(upstream.name(), "answered " + status + " for " + what, "status_5xx");
        } else {
            error = RegistryError.badGateway(upstream.name(), "unexpected status " + status + " for " + what,
                    "protocol");
        }
        if (error.isUpstreamFailure()) {
            metrics.upstreamError(upstream.name(), error.upstreamReason);
        }
        return error;
    }

    private RegistryError refusedRedirect(String why) {
        countError("protocol");
        return RegistryError.badGateway(upstream.name(), why, "protocol");
    }

    /** Counts body bytes received from this upstream. */
    @Override
    public void received(long bytes) {
        metrics.upstreamBytes(upstream.name(), bytes);
    }

    /** Counts a failed exchange with this upstream. */
    @Override
    public void countError(String reason) {
        metrics.upstreamError(upstream.name(), reason);
        noteFailure("failing", "bad answer (" + reason.replace('_', ' ') + ")");
    }

    /** Feeds a body chunk to a digest being computed, without copying it. */
    public static void hash(MessageDigest hasher, Buffer chunk) {
        for (ByteBuffer nio : NettyBuffers.unwrap(chunk).nioBuffers()) {
            hasher.update(nio);
        }
    }

    /** Drops a response body: a small one is read so the connection can be reused, a large one cut off. */
    public static void discard(HttpClientResponse resp) {
        Bodies.discard(resp);
    }

    /**
     * Maps a transport failure (no HTTP answer) to an error for the client, by the types of the
     * failure and its causes: no connection (refused, no route, unknown host, connect timeout), no
     * answer in time (Vert.x's and Netty's timeouts), TLS, or else a broken connection.
     */
    public static RegistryError transportError(String upstream, String host, Throwable err) {
        if (err instanceof RegistryError re) {
            return re;
        }
        for (Throwable c = err; c != null; c = c.getCause() == c ? null : c.getCause()) {
            if (c instanceof ConnectException || c instanceof UnknownHostException
                    || c instanceof NoRouteToHostException) {
                return RegistryError.unavailable(upstream, "cannot connect to " + host + ": " + c.getMessage(),
                        "connect");
            }
            if (c instanceof TimeoutException || c instanceof io.netty.handler.timeout.TimeoutException
                    || c instanceof SocketTimeoutException) {
                return RegistryError.unavailable(upstream, "no answer from " + host + " in time", "timeout");
            }
            if (c instanceof SSLException) {
                return RegistryError.unavailable(upstream, "TLS with " + host + " failed: " + c.getMessage(), "tls");
            }
        }
        return RegistryError.unavailable(upstream, "connection to " + host + " failed: " + err, "reset");
    }

    /**
     * The client of the calling event loop (see {@link #perLoop}): for blobs, whose bodies stream in
     * large pieces, or for answers read whole ({@code blob} false).
     */
    HttpClient client(boolean blob) {
        Context context = Vertx.currentContext();
        if (context == null || !context.isEventLoopContext() || !Context.isOnEventLoopThread()) {
            return shared;
        }
        return blob ? perLoop.computeIfAbsent(Thread.currentThread(), t -> vertx.createHttpClient(options, POOL))
                : perLoopWhole.computeIfAbsent(Thread.currentThread(), t -> vertx.createHttpClient(wholeBodyOptions, POOL));
    }

    public void close() {
        shared.close();
        perLoop.values().forEach(HttpClient::close);
        perLoopWhole.values().forEach(HttpClient::close);
    }

    private static boolean sameOrigin(URI a, URI b) {
        return Objects.equals(a.getScheme(), b.getScheme()) && Objects.equals(a.getHost(), b.getHost())
                && port(a) == port(b);
    }

    private static int port(URI uri) {
        if (uri.getPort() >= 0) {
            return uri.getPort();
        }
        return "https".equals(uri.getScheme()) ? 443 : 80;
    }

    /** The JDK's default trust plus the PEM certificates in the upstream's {@code caFile}. */
    private static TrustManagerFactory trustWithExtraCas(MirrorConfig.Upstream upstream) {
        try {
            KeyStore store = KeyStore.getInstance(KeyStore.getDefaultType());
            store.load(null, null);
            TrustManagerFactory system = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
            system.init((KeyStore) null);
            int n = 0;
            for (var tm : system.getTrustManagers()) {
                if (tm instanceof X509TrustManager x) {
                    for (X509Certificate c : x.getAcceptedIssuers()) {
                        store.setCertificateEntry("system-" + n++, c);
                    }
                }
            }
            CertificateFactory cf = CertificateFactory.getInstance("X.509");
            int extra = 0;
            try (InputStream in = Files.newInputStream(upstream.caFile())) {
                for (Certificate c : cf.generateCertificates(in)) {
                    store.setCertificateEntry("extra-" + extra++, c);
                }
            }
            if (extra == 0) {
                throw new dev.registrymirror.config.ConfigException("upstreams[" + upstream.name() + "].caFile: \""
                        + upstream.caFile() + "\" holds no PEM certificate");
            }
            TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
            tmf.init(store);
            return tmf;
        } catch (IOException | GeneralSecurityException e) {
            throw new dev.registrymirror.config.ConfigException("upstreams[" + upstream.name() + "].caFile: \""
                    + upstream.caFile() + "\" cannot be read as PEM certificates: " + e.getMessage(), e);
        }
    }
}
