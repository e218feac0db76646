package dev.registrymirror.proxy.access;

import dev.registrymirror.config.MirrorConfig;
import dev.registrymirror.metrics.MirrorMetrics;
import dev.registrymirror.proxy.route.RegistryError;
import io.github.bucket4j.Bandwidth;
import io.github.bucket4j.Bucket;
import io.github.bucket4j.ConsumptionProbe;
import com.github.benmanes.caffeine.cache.Cache;
import com.github.benmanes.caffeine.cache.Caffeine;
import io.vertx.core.Future;
import io.vertx.core.Vertx;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.HttpServerRequest;
import io.vertx.core.json.JsonObject;
import java.nio.charset.StandardCharsets;
import java.security.cert.Certificate;
import java.security.cert.X509Certificate;
import java.time.Clock;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import javax.naming.InvalidNameException;
import javax.naming.ldap.LdapName;
import javax.naming.ldap.Rdn;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@code access:}: who a client is, and whether it may do what it asks. Clients authenticate as
 * they do with registries: {@code GET /v2/} answers {@code 401} with a bearer challenge naming the
 * mirror's own token endpoint ({@code /token}), which gives a token to anyone (an anonymous one
 * without credentials, as Docker Hub does) and a user's token for an htpasswd user's Basic
 * credentials; Basic credentials on any request work too (containerd's static header); a client
 * certificate counts as its names. A pull the rules refuse is {@code 401} with a challenge when the
 * client sent no credentials, {@code 403 DENIED} when it did. Every refusal is logged with the
 * client's address and name and counted; no password, token or Authorization header is logged.
 */
public final class AccessControl {
    private static final Logger LOG = LoggerFactory.getLogger(AccessControl.class);
    public static final String TOKEN_PATH = "/token";
    public static final String SERVICE = "registry-mirror";
    /** The largest form {@code POST /token} takes (user name and password). */
    static final int MAX_FORM_BYTES = 8192;

    private final Vertx vertx;
    private final MirrorConfig.Access config;
    private final Users users;
    private final Tokens tokens;
    private final Rules rules;
    private final Networks networks;
    private final MirrorMetrics metrics;
    /** bcrypt checks: slow by design, rationed per address, on threads of their own; null without users. */
    private final PasswordChecks passwords;
    /** Addresses whose throttled logins were logged in the last minute (one line a minute each). */
    private final Cache<String, Boolean> throttledLogged = Caffeine.newBuilder().maximumSize(10_000)
            .expireAfterWrite(Duration.ofMinutes(1)).build();
    private final Cache<String, Bucket> buckets = Caffeine.newBuilder().maximumSize(100_000)
            .expireAfterAccess(Duration.ofMinutes(10)).build();
    private long usersTimer = -1;

    public AccessControl(Vertx vertx, MirrorConfig.Access config, Clock clock, MirrorMetrics metrics) {
        this.vertx = vertx;
        this.config = config;
        this.users = config.users() == null ? null : new Users(config.users());
        this.passwords = users == null ? null : new PasswordChecks(vertx, users::check, config.failedLoginsPerMinute());
        this.tokens = new Tokens(clock, config.tokenKey());
        this.rules = new Rules(config.rules());
        this.networks = new Networks(config.networks());
        this.metrics = metrics;
    }

    /** Starts re-reading the htpasswd file every 10 seconds (on a worker: it is a file). */
    public void start() {
        if (users != null) {
            usersTimer = vertx.setPeriodic(10_000, t -> vertx.executeBlocking(users::reloadIfChanged, false));
        }
    }

    public void stop() {
        if (usersTimer >= 0) {
            vertx.cancelTimer(usersTimer);
        }
        if (passwords != null) {
            passwords.close();
        }
    }

    /** Whether {@code id} may pull {@code name} ({@code <upstream>/<repository>}): what the status page may show it. */
    public boolean mayPull(Identity id, String name) {
        return id.in(rules.pullers(name));
    }

    /** Reads the htpasswd file again now, as the periodic check does (tests call it). Blocks. */
    public boolean reloadUsers() {
        return users != null && users.reloadIfChanged();
    }

    /** Users in the htpasswd file, -1 without one. */
    public int userCount() {
        return users == null ? -1 : users.size();
    }

    /** A request from outside {@code access.networks}: the error to answer, else null. */
    public RegistryError network(HttpServerRequest req) {
        if (networks.isEmpty() || networks.contains(address(req))) {
            return null;
        }
        return deny(req, Identity.NOBODY, "network", "from outside access.networks",
                new RegistryError(403, "DENIED", "this mirror does not serve " + address(req)));
    }

    /**
     * Who the client is: from its Authorization header (Basic: checked against the htpasswd file on
     * a worker; Bearer: one of this mirror's tokens), else its certificate, else nobody. Wrong
     * credentials fail with a 401 and a challenge.
     *
     * @param useAuthorization false where the header means something else (the admin API's token)
     */
    public Future<Identity> identify(HttpServerRequest req, boolean useAuthorization) {
        String auth = useAuthorization ? req.getHeader(HttpHeaders.AUTHORIZATION) : null;
        if (auth == null) {
            List<String> certNames = certificateNames(req);
            return Future.succeededFuture(certNames.isEmpty() ? Identity.NOBODY
                    : new Identity(certNames, Identity.How.CERTIFICATE));
        }
        if (auth.regionMatches(true, 0, "Bearer ", 0, 7)) {
            String name = tokens.verify(auth.substring(7).strip());
            if (name == null) {
                return Future.failedFuture(deny(req, Identity.NOBODY, "bad_credentials", "an invalid or expired token",
                        challenge(req, null, "the token is invalid or expired; ask " + TOKEN_PATH + " for a new one")));
            }
            if (!name.isEmpty() && users != null && !users.exists(name)) {
                // Removed from the htpasswd file since the token was issued: the token goes with the user.
                return Future.failedFuture(deny(req, Identity.NOBODY, "bad_credentials", "a token of a removed user",
                        challenge(req, null, "the token is invalid or expired; ask " + TOKEN_PATH + " for a new one")));
            }
            if (!name.isEmpty()) {
                return Future.succeededFuture(new Identity(List.of(name), Identity.How.TOKEN));
            }
            List<String> certNames = certificateNames(req); // an anonymous token: the certificate says more
            return Future.succeededFuture(certNames.isEmpty() ? Identity.ANONYMOUS_TOKEN
                    : new Identity(certNames, Identity.How.CERTIFICATE));
        }
        if (auth.regionMatches(true, 0, "Basic ", 0, 6)) {
            return basic(req, auth.substring(6).strip()).map(name -> new Identity(List.of(name), Identity.How.PASSWORD));
        }
        return Future.failedFuture(deny(req, Identity.NOBODY, "bad_credentials", "an Authorization header of another scheme",
                challenge(req, null, "send Basic credentials or a bearer token from " + TOKEN_PATH)));
    }

    /**
     * Who the client is, if it may go on: identified ({@link #identify}), within its request rate
     * ({@link #rateLimit}), and let through by {@code check}; else failed with the refusal.
     */
    public Future<Identity> admit(HttpServerRequest req, boolean useAuthorization,
                                  java.util.function.Function<Identity, RegistryError> check) {
        return identify(req, useAuthorization).compose(id -> {
            RegistryError refused = rateLimit(req, id);
            if (refused == null) {
                refused = check.apply(id);
            }
            return refused == null ? Future.succeededFuture(id) : Future.failedFuture(refused);
        });
    }

    /** The user of Basic credentials, checked off the event loop; a 401 if they are wrong. */
    private Future<String> basic(HttpServerRequest req, String encoded) {
        String decoded;
        try {
            decoded = new String(Base64.getDecoder().decode(encoded), StandardCharsets.UTF_8);
        } catch (IllegalArgumentException e) {
            decoded = "";
        }
        int colon = decoded.indexOf(':');
        String user = colon > 0 ? decoded.substring(0, colon) : "";
        String password = colon > 0 ? decoded.substring(colon + 1) : "";
        if (users == null || user.isEmpty()) {
            return Future.failedFuture(deny(req, Identity.NOBODY, "bad_credentials", "Basic credentials it cannot check",
                    challenge(req, null, users == null ? "this mirror has no users" : "malformed Basic credentials")));
        }
        if (users.remembered(user, password)) {
            return Future.succeededFuture(user); // checked lately: no bcrypt, no queue
        }
        return passwords.check(address(req), user, password).transform(ar -> {
            if (ar.failed()) {
                PasswordChecks.Refused r = (PasswordChecks.Refused) ar.cause();
                return Future.failedFuture(r.throttled ? throttled(req, r.error)
                        : deny(req, Identity.NOBODY, "busy", "a login while the password checks are full", r.error));
            }
            if (ar.result()) {
                return Future.succeededFuture(user);
            }
            return Future.failedFuture(deny(req, new Identity(List.of(user), Identity.How.PASSWORD), "bad_credentials",
                    "a wrong user name or password", challenge(req, null, "wrong user name or password")));
        });
    }

    /** A login refused without a check (its address failed too often): counted, and logged once a minute per address. */
    private RegistryError throttled(HttpServerRequest req, RegistryError e) {
        metrics.accessDenied("throttled");
        if (throttledLogged.asMap().putIfAbsent(address(req), Boolean.TRUE) == null) {
            LOG.warn("access: too many failed logins from {} (access.failedLoginsPerMinute: {}); its logins get 429"
                    + " without a password check until its allowance refills", address(req), config.failedLoginsPerMinute());
        }
        return e;
    }

    private final Cache<String, Bucket> fetchBuckets = Caffeine.newBuilder().maximumSize(100_000)
            .expireAfterAccess(Duration.ofMinutes(10)).build();
    private final Cache<String, Boolean> spentLogged = Caffeine.newBuilder().maximumSize(10_000)
            .expireAfterWrite(Duration.ofMinutes(1)).build();

    /**
     * Over {@code access.requestsPerSecond} for this client (user, else address): the 429 to answer,
     * else null. Also gives the request the client's allowance of upstream fetches, if limited.
     */
    public RegistryError rateLimit(HttpServerRequest req, Identity id) {
        String key = id.authenticated() ? "user:" + id.display() : "address:" + address(req);
        if (config.upstreamFetchesPerMinute() > 0) {
            int n = config.upstreamFetchesPerMinute();
            Bucket fetches = fetchBuckets.get(key, k -> bucket(n, Duration.ofMinutes(1)));
            String who = id.authenticated() ? id.display() : address(req);
            dev.registrymirror.proxy.upstream.UpstreamBudget.attach(fetches, who, n, () -> {
                metrics.accessDenied("rate_limited");
                // One line a minute per client: a runaway job would otherwise write one per request.
                if (spentLogged.asMap().putIfAbsent(key, Boolean.TRUE) == null) {
                    LOG.warn("access: {} is over {} upstream fetches per minute (access.upstreamFetchesPerMinute);"
                            + " its misses get 429 until the allowance refills, cached content is still served", who, n);
                }
            });
        }
        if (config.requestsPerSecond() <= 0) {
            return null;
        }
        Bucket bucket = buckets.get(key, k -> bucket(config.requestsPerSecond(), Duration.ofSeconds(1)));
        ConsumptionProbe probe = bucket.tryConsumeAndReturnRemaining(1);
        if (probe.isConsumed()) {
            return null;
        }
        long seconds = Math.max(1, (probe.getNanosToWaitForRefill() + 999_999_999L) / 1_000_000_000L);
        RegistryError e = new RegistryError(429, "TOOMANYREQUESTS", "over " + config.requestsPerSecond()
                + " requests per second for " + (id.authenticated() ? id.display() : address(req)),
                Long.toString(seconds), null);
        return deny(req, id, "rate_limited", "over access.requestsPerSecond", e);
    }

    /** A token bucket of {@code n} tokens, all refilled over {@code period}. */
    private static Bucket bucket(int n, Duration period) {
        return Bucket.builder().addLimit(Bandwidth.builder().capacity(n).refillGreedy(n, period).build()).build();
    }

    /** {@code GET /v2/}: a client with no credentials gets the challenge that starts the token flow (when there are users). */
    public RegistryError base(HttpServerRequest req, Identity id) {
        if (users != null && id.how() == Identity.How.NONE) {
            return challenge(req, null, "authentication required: ask " + TOKEN_PATH + " for a token (anonymous ones too)");
        }
        return null;
    }

    /** A pull of {@code upstream/repository} ({@code clientName} as the client wrote it): the error to answer, else null. */
    public RegistryError pull(HttpServerRequest req, Identity id, String name, String clientName) {
        if (id.in(rules.pullers(name))) {
            return null;
        }
        if (!id.authenticated()) {
            return deny(req, id, "unauthenticated", "a pull of " + name,
                    challenge(req, "repository:" + clientName + ":pull", "authentication required for " + name));
        }
        return deny(req, id, "forbidden", "a pull of " + name,
                new RegistryError(403, "DENIED", id.display() + " may not pull " + name));
    }

    /**
     * A push to hosted repository {@code name} (an upload, a manifest, a deletion): the error to
     * answer, else null. Only a rule's {@code push} list allows one.
     */
    public RegistryError push(HttpServerRequest req, Identity id, String name) {
        if (id.in(rules.pushers(name))) {
            return null;
        }
        if (!id.authenticated()) {
            return deny(req, id, "unauthenticated", "a push to " + name,
                    challenge(req, "repository:" + name + ":pull,push", "authentication required to push to " + name));
        }
        return deny(req, id, "forbidden", "a push to " + name,
                new RegistryError(403, "DENIED", id.display() + " may not push to " + name));
    }

    /** {@code /metrics} and the status page, by {@code access.metrics}. */
    public RegistryError metrics(HttpServerRequest req, Identity id) {
        return listed(req, id, config.metrics(), "metrics");
    }

    /** The admin API, by {@code access.admin} (names from client certificates: its Authorization header is the admin token). */
    public RegistryError admin(HttpServerRequest req, Identity id) {
        return listed(req, id, config.admin(), "admin");
    }

    private RegistryError listed(HttpServerRequest req, Identity id, List<String> allowed, String what) {
        if (allowed == null || id.in(allowed)) {
            return null;
        }
        if (!id.authenticated() && !what.equals("admin")) {
            // Basic, not the token flow: browsers (the status page) prompt for it, Prometheus sends it.
            return deny(req, id, "unauthenticated", "the " + what + " endpoints", RegistryError.challenge(
                    "authentication required for " + req.path(), "Basic realm=\"" + SERVICE + "\", charset=\"UTF-8\""));
        }
        return deny(req, id, "forbidden", "the " + what + " endpoints",
                new RegistryError(403, "DENIED", id.display() + " may not read " + req.path()));
    }

    /**
     * The token endpoint: {@code GET /token?service=...&scope=...} with Basic credentials or none
     * (an anonymous token), or {@code POST} with a form {@code grant_type=password&username&password}
     * (containerd's OAuth2 form). Answers {@code {"token", "access_token", "expires_in", "issued_at"}}.
     */
    public Future<Void> serveToken(HttpServerRequest req) {
        RegistryError limited = rateLimit(req, Identity.NOBODY);
        if (limited != null) {
            return Future.failedFuture(limited);
        }
        if (req.method() == HttpMethod.POST) {
            String length = req.getHeader(HttpHeaders.CONTENT_LENGTH);
            if (length != null && (!length.matches("\\d{1,9}") || Long.parseLong(length) > MAX_FORM_BYTES)) {
                return Future.failedFuture(new RegistryError(413, "SIZE_INVALID", "the token form is larger than "
                        + MAX_FORM_BYTES + " bytes"));
            }
            req.setExpectMultipart(true);
            io.vertx.core.Promise<Void> ended = io.vertx.core.Promise.promise();
            req.endHandler(v -> ended.tryComplete());
            // The form decoder refuses an attribute over its limit (a body without a length).
            req.exceptionHandler(err -> ended.tryFail(new RegistryError(400, "UNSUPPORTED",
                    "the token form cannot be read (at most " + MAX_FORM_BYTES + " bytes)")));
            return ended.future().compose(v -> {
                String user = req.getFormAttribute("username");
                String password = req.getFormAttribute("password");
                if (user == null || password == null) {
                    return answerToken(req, "");
                }
                String basic = Base64.getEncoder().encodeToString((user + ":" + password).getBytes(StandardCharsets.UTF_8));
                return basic(req, basic).compose(name -> answerToken(req, name));
            });
        }
        String auth = req.getHeader(HttpHeaders.AUTHORIZATION);
        if (auth != null && auth.regionMatches(true, 0, "Basic ", 0, 6)) {
            return basic(req, auth.substring(6).strip()).compose(name -> answerToken(req, name));
        }
        return answerToken(req, "");
    }

    private Future<Void> answerToken(HttpServerRequest req, String name) {
        String token = tokens.issue(name);
        JsonObject body = new JsonObject().put("token", token).put("access_token", token)
                .put("expires_in", Tokens.LIFETIME.toSeconds())
                .put("issued_at", java.time.Instant.now().toString());
        return req.response().putHeader(HttpHeaders.CONTENT_TYPE, "application/json")
                .putHeader(HttpHeaders.CACHE_CONTROL, "no-store").end(body.toBuffer());
    }

    /** A 401 whose challenge names this mirror's token endpoint, as the client reached the mirror. */
    private static RegistryError challenge(HttpServerRequest req, String scope, String message) {
        String host = req.getHeader(HttpHeaders.HOST);
        if (host == null || !host.matches("[A-Za-z0-9.:\\[\\]-]+")) {
            host = req.localAddress().hostAddress() + ":" + req.localAddress().port();
        }
        String realm = (req.isSSL() ? "https" : "http") + "://" + host + TOKEN_PATH;
        return RegistryError.challenge(message, "Bearer realm=\"" + realm + "\",service=\"" + SERVICE + "\""
                + (scope == null ? "" : ",scope=\"" + scope + "\""));
    }

    private RegistryError deny(HttpServerRequest req, Identity id, String reason, String what, RegistryError e) {
        LOG.warn("access: refused {} {} from {} ({}): {} ({} {})", req.method(), req.path(), address(req), id.display(),
                what, e.status, e.code);
        metrics.accessDenied(reason);
        return e;
    }

    private static String address(HttpServerRequest req) {
        return req.remoteAddress() == null ? "?" : req.remoteAddress().hostAddress();
    }

    /** The client certificate's CN and DNS names; empty without one. */
    static List<String> certificateNames(HttpServerRequest req) {
        if (!req.isSSL()) {
            return List.of();
        }
        List<String> names = new ArrayList<>();
        try {
            List<Certificate> chain = req.connection().peerCertificates();
            if (chain == null || chain.isEmpty() || !(chain.get(0) instanceof X509Certificate leaf)) {
                return List.of();
            }
            for (Rdn rdn : new LdapName(leaf.getSubjectX500Principal().getName()).getRdns()) {
                if (rdn.getType().equalsIgnoreCase("CN")) {
                    names.add(String.valueOf(rdn.getValue()));
                }
            }
            if (leaf.getSubjectAlternativeNames() != null) {
                for (List<?> san : leaf.getSubjectAlternativeNames()) {
                    if (Integer.valueOf(2).equals(san.get(0)) && !names.contains(String.valueOf(san.get(1)))) {
                        names.add(String.valueOf(san.get(1)));
                    }
                }
            }
        } catch (javax.net.ssl.SSLPeerUnverifiedException e) {
            return List.of(); // no client certificate
        } catch (InvalidNameException | java.security.cert.CertificateParsingException e) {
            return names;
        }
        return names;
    }
}
