package dev.registrymirror.proxy.http;

import dev.registrymirror.proxy.hosted.HostedRegistry;
import dev.registrymirror.proxy.hosted.HostedRoute;
import dev.registrymirror.proxy.route.Route;
import dev.registrymirror.proxy.route.RouteParser;
import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.upstream.UpstreamClient;
import dev.registrymirror.proxy.vertx.Fatal;
import dev.registrymirror.proxy.blob.BlobService;
import dev.registrymirror.proxy.manifest.ManifestService;
import dev.registrymirror.proxy.manifest.Referrers;
import dev.registrymirror.proxy.manifest.TagLists;

import dev.registrymirror.config.MirrorConfig;
import dev.registrymirror.metrics.MirrorMetrics;
import dev.registrymirror.proxy.access.AccessControl;
import dev.registrymirror.proxy.cluster.Cluster;
import dev.registrymirror.proxy.cluster.HopAuth;
import dev.registrymirror.proxy.operator.OperatorRoutes;
import dev.registrymirror.proxy.operator.PullCounts;
import io.vertx.core.Future;
import io.vertx.ext.web.Router;
import io.vertx.ext.web.RoutingContext;
import io.netty.handler.codec.http.TooLongHttpHeaderException;
import io.netty.handler.codec.http.TooLongHttpLineException;
import io.vertx.core.Handler;
import io.vertx.core.Promise;
import io.vertx.core.Vertx;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.HttpServerRequest;
import io.vertx.core.http.HttpServerResponse;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The HTTP entry point: parses the route, hands it to the service for its kind, and is the one
 * place where failures become OCI error responses ({@code {"errors":[{code,message,detail}]}}).
 */
public final class RegistryHandler implements Handler<HttpServerRequest> {
    private static final Logger LOG = LoggerFactory.getLogger(RegistryHandler.class);
    public static final String API_VERSION_HEADER = RegistryError.API_VERSION_HEADER;

    private final RouteParser parser;
    private final Map<String, UpstreamClient> upstreams;
    private final BlobService blobs;
    private final ManifestService manifests;
    private final TagLists tagLists;
    private final Referrers referrers;
    private final MirrorMetrics metrics;
    private final Vertx vertx;
    private final ConnectionGuard connections;
    private final AtomicInteger active = new AtomicInteger();
    private volatile boolean draining;
    /** {@code access:}; null when nothing is restricted. */
    private final AccessControl access;
    /** The cluster this replica belongs to; null when it runs alone. */
    private final Cluster cluster;
    /** Addresses whose refused hops were logged in the last minute. */
    private final com.github.benmanes.caffeine.cache.Cache<String, Boolean> refusedHops =
            com.github.benmanes.caffeine.cache.Caffeine.newBuilder().maximumSize(10_000)
                    .expireAfterWrite(java.time.Duration.ofMinutes(1)).build();
    private final PullCounts pulls = new PullCounts();
    private final MirrorConfig config;
    /** The hosted repositories' API; null without {@code hosted}. */
    private final HostedRegistry hosted;

    public RegistryHandler(Vertx vertx, MirrorConfig config, Map<String, UpstreamClient> upstreams, BlobService blobs,
                    ManifestService manifests, TagLists tagLists, Referrers referrers, MirrorMetrics metrics,
                    ConnectionGuard connections, AccessControl access, Cluster cluster, HostedRegistry hosted) {
        this.config = config;
        this.hosted = hosted;
        this.cluster = cluster;
        this.access = access;
        this.connections = connections;
        this.parser = new RouteParser(config);
        this.upstreams = upstreams;
        this.blobs = blobs;
        this.manifests = manifests;
        this.tagLists = tagLists;
        this.referrers = referrers;
        this.metrics = metrics;
        this.vertx = vertx;
    }

    /** Pulls per repository since start. */
    public PullCounts pulls() {
        return pulls;
    }

    /** Requests being answered now. */
    public int active() {
        return active.get();
    }

    /**
     * Stops taking requests (new ones get a 503, and their connection is closed) and completes when
     * the requests in progress have finished, or after {@code timeout}, whichever comes first.
     */
    public Future<Void> drain(Duration timeout) {
        draining = true;
        Promise<Void> drained = Promise.promise();
        long deadline = System.nanoTime() + timeout.toNanos();
        if (active.get() == 0) {
            return Future.succeededFuture();
        }
        LOG.info("waiting up to {} ms for {} responses in progress", timeout.toMillis(), active.get());
        vertx.setPeriodic(20, id -> {
            if (active.get() == 0 || System.nanoTime() >= deadline) {
                vertx.cancelTimer(id);
                if (active.get() > 0) {
                    LOG.warn("{} responses still in progress after {} ms; closing them", active.get(),
                            timeout.toMillis());
                }
                drained.tryComplete();
            }
        });
        return drained.future();
    }

    @Override
    public void handle(HttpServerRequest req) {
        handle(req, access, routers.external());
    }

    /** A request of the mirror's own (the prefetcher's, from the loopback listener): no access rules apply. */
    public void handleInternal(HttpServerRequest req) {
        handle(req, null, routers.internal());
    }

    /**
     * The registry API ({@code /v2/...}, every pull) goes straight to its own parser after the common
     * steps: through the routing table, tag hits ran at 55.7k/s against 71.8k/s straight, and a cold
     * blob's first byte came 1.5 ms later (bench/results.md). Everything else goes through the table.
     */
    private void handle(HttpServerRequest req, AccessControl access, Router router) {
        if (req.path().startsWith("/v2/") || req.path().equals("/v2")) {
            String hop = req.getHeader(HopAuth.HEADER);
            if (hop != null) {
                hop(req, hop);
                return;
            }
            Started started = begin(req, access);
            if (started != null) {
                registry(req, started, access, false);
            }
        } else if (req.path().startsWith("/admin/") && req.getHeader(HopAuth.HEADER) != null) {
            removalFromReplica(req, req.getHeader(HopAuth.HEADER));
        } else {
            router.handle(req);
        }
    }

    /** What a removal forwarded by another replica runs (the admin API's); unset when alone. */
    private volatile java.util.function.Function<HttpServerRequest, Future<Void>> removals;

    /** Sets what a removal another replica forwards (signed) runs: the admin API's own removal, here only. */
    public void removalsFromReplicas(java.util.function.Function<HttpServerRequest, Future<Void>> removals) {
        this.removals = removals;
    }

    /** An admin removal another replica forwards: done here if signed with the cluster's secret. */
    private void removalFromReplica(HttpServerRequest req, String signature) {
        Started started = admittedHop(req, signature);
        if (started == null) {
            return;
        }
        counted(req, started, "admin", null);
        Future<Void> answer = removals == null
                ? Future.failedFuture(new RegistryError(404, "UNSUPPORTED", "no removals here"))
                : removals.apply(req);
        answer.onFailure(err -> failed(req, err, "a forwarded removal", req.path()));
    }

    /**
     * A request from another replica, begun and counted as a hop in, if its signature is the cluster's;
     * null otherwise, the request answered 403 (and the refusal logged, once a minute per address), or
     * when it cannot begin (then answered too).
     */
    private Started admittedHop(HttpServerRequest req, String signature) {
        if (cluster != null && cluster.hops().verify(signature, req.method().name(), req.uri())) {
            Started started = begin(req, null);
            if (started != null) {
                cluster.metrics().hop("in");
            }
            return started;
        }
        String from = req.remoteAddress() == null ? "?" : req.remoteAddress().hostAddress();
        if (refusedHops.asMap().putIfAbsent(from, Boolean.TRUE) == null) {
            LOG.warn("cluster: refused a hop from {}: {}", from, cluster == null ? "this mirror runs alone"
                    : "not signed with this cluster's secret (or too old)");
        }
        Started started = begin(req, null);
        if (started != null) {
            counted(req, started, "denied", null);
            writeError(req, new RegistryError(403, "DENIED", "not a replica of this cluster"));
        }
        return null;
    }

    /** The two routing tables: for clients, and for the mirror's own requests (no access rules). */
    private record Routers(Router external, Router internal) {
    }

    private volatile Routers routers;

    /**
     * Builds the routing tables, with the operator routes {@code operator} adds (see
     * {@link OperatorRoutes}): first every request's common steps, then {@code /token},
     * {@code /metrics} and the operator routes, then the registry API for everything else.
     */
    public void routes(java.util.function.BiConsumer<Router, OperatorRoutes.Guard> operator) {
        routers = new Routers(router(false, operator), router(true, operator));
    }

    private Router router(boolean internal, java.util.function.BiConsumer<Router, OperatorRoutes.Guard> operator) {
        AccessControl access = internal ? null : this.access;
        Router router = Router.router(vertx);
        router.route().handler(ctx -> {
            Started started = begin(ctx.request(), access);
            if (started != null) {
                ctx.put(STARTED, started);
                ctx.next();
            }
        });
        if (access != null) {
            router.route(AccessControl.TOKEN_PATH).handler(ctx -> {
                HttpServerRequest req = ctx.request();
                counted(ctx, "token", null);
                access.serveToken(req).onFailure(err -> failed(req, err, "a token request", req.path()));
            });
        }
        OperatorRoutes.Guard guard = (label, audience, answer) -> ctx -> guarded(ctx, access, label, audience, answer);
        Handler<RoutingContext> scrape = guard.guard("metrics", OperatorRoutes.Audience.METRICS, (ctx, mayPull) ->
                ctx.response().putHeader(HttpHeaders.CONTENT_TYPE, MirrorMetrics.CONTENT_TYPE).end(metrics.scrape()));
        router.get("/metrics").handler(scrape);
        router.head("/metrics").handler(scrape);
        operator.accept(router, guard);
        router.route().handler(ctx -> registry(ctx.request(), ctx.get(STARTED), access, false));
        // What the router itself refuses (a path it cannot normalize, say) gets the OCI error body too.
        for (int status : new int[] {400, 404, 405, 500}) {
            router.errorHandler(status, this::routerFailed);
        }
        return router;
    }

    /** A request the router failed (before or outside the routes' own error handling). */
    private void routerFailed(RoutingContext ctx) {
        HttpServerRequest req = ctx.request();
        if (req.response().ended()) {
            return;
        }
        if (ctx.get(STARTED) != null) {
            counted(ctx, "invalid", null);
        }
        req.response().putHeader(API_VERSION_HEADER, "registry/2.0");
        Throwable err = ctx.failure();
        int status = ctx.statusCode();
        if (err instanceof IllegalArgumentException || err == null && status < 400) {
            err = new RegistryError(400, "UNSUPPORTED", "malformed request"); // a path it could not decode
        } else if (err == null && status < 500) {
            err = new RegistryError(status, "UNSUPPORTED", status == 405
                    ? req.method() + " is not supported here" : "malformed request");
        }
        failed(req, err == null ? new IllegalStateException("status " + status) : err,
                "a request", req.method() + " " + req.path());
    }

    /** Where a request's common steps leave what its route needs. */
    private static final String STARTED = "registrymirror.started";

    /** When a request started, and what to run once it has ended. */
    private record Started(long nanos, Runnable done) {
    }

    /**
     * What every request goes through first: its connection counted busy, the API version header,
     * a 503 while draining, a 400 for a malformed query (decoded once, here, for every route), and a
     * 403 from outside {@code access.networks}. Yields what the route needs, or null when the
     * request was answered here.
     */
    private Started begin(HttpServerRequest req, AccessControl access) {
        HttpServerResponse resp = req.response();
        connections.requestStarted(req);
        resp.putHeader(API_VERSION_HEADER, "registry/2.0");
        if (draining) {
            resp.putHeader(HttpHeaders.CONNECTION, "close");
            writeError(req, RegistryError.shuttingDown());
            return null;
        }
        active.incrementAndGet();
        AtomicBoolean finished = new AtomicBoolean();
        Runnable done = () -> {
            if (finished.compareAndSet(false, true)) {
                connections.requestEnded(req); // first: once no request is active, every connection is idle
                active.decrementAndGet();
            }
        };
        connections.whenClosed(req, done);
        Started started = new Started(System.nanoTime(), done);
        try {
            req.params();
        } catch (IllegalArgumentException e) {
            counted(req, started, "invalid", null);
            writeError(req, new RegistryError(400, "UNSUPPORTED", "malformed query (a bad %-escape)"));
            return null;
        }
        RegistryError outside = access == null ? null : access.network(req);
        if (outside != null) {
            counted(req, started, "denied", null);
            writeError(req, outside);
            return null;
        }
        return started;
    }

    /** Counts the request under {@code label} once its answer has ended; then runs {@code after} (may be null). */
    private void counted(RoutingContext ctx, String label, Runnable after) {
        counted(ctx.request(), ctx.get(STARTED), label, after);
    }

    private void counted(HttpServerRequest req, Started started, String label, Runnable after) {
        HttpServerResponse resp = req.response();
        resp.endHandler(v -> {
            started.done().run();
            metrics.requestServed(label, req.method().name(), resp.getStatusCode(), System.nanoTime() - started.nanos());
            if (after != null) {
                after.run();
            }
        });
    }

    /** An operator route: the caller admitted as {@code audience} says (the access rules), then answered. */
    private void guarded(RoutingContext ctx, AccessControl access, String label, OperatorRoutes.Audience audience,
                         OperatorRoutes.Answer answer) {
        HttpServerRequest req = ctx.request();
        counted(ctx, label, null);
        Future<Void> answered;
        try {
            boolean admin = audience == OperatorRoutes.Audience.ADMIN;
            // The admin API's Authorization header is its token, not a client's credentials.
            answered = access == null ? answer.answer(ctx, name -> true) : access.admit(req, !admin,
                    id -> admin ? access.admin(req, id) : access.metrics(req, id))
                    .compose(id -> answer.answer(ctx, name -> access.mayPull(id, name)));
        } catch (RuntimeException e) {
            answered = Future.failedFuture(e);
        }
        answered.onFailure(err -> failed(req, err, "a " + label + " request", req.method() + " " + req.path()));
    }

    /**
     * A request from another replica, for a blob this one owns: answered if its signature is the
     * cluster's (the asking replica checked the client's access; the name it carries is the client's,
     * so provenance holds here), never forwarded again; refused (403) otherwise, one line a minute.
     */
    private void hop(HttpServerRequest req, String signature) {
        Started started = admittedHop(req, signature);
        if (started == null) {
            return;
        }
        if (req.method() == HttpMethod.POST && "1".equals(req.getParam("keep"))) {
            keepCopy(req, started);
            return;
        }
        req.response().bodyEndHandler(v -> cluster.metrics().hopBytes("in", req.response().bytesWritten()));
        registry(req, started, null, true);
    }

    /** The first owner of a blob asks this replica to keep a second copy ({@code cluster.copies}). */
    private void keepCopy(HttpServerRequest req, Started started) {
        Route route;
        try {
            route = parser.parse(req.path(), req.getParam("ns"));
            if (route.kind() != Route.Kind.BLOB) {
                throw new RegistryError(400, "UNSUPPORTED", "only a blob can be kept as a copy");
            }
        } catch (RegistryError e) {
            counted(req, started, "invalid", null);
            writeError(req, e);
            return;
        }
        counted(req, started, route.kind().label, null);
        Future<Void> answer;
        try {
            answer = blobs.keepCopy(route, upstream(route), req);
        } catch (RegistryError e) {
            answer = Future.failedFuture(e);
        }
        answer.onFailure(err -> failed(req, err, "a copy request", route));
    }

    /** The registry API ({@code /v2/...}), parsed by its own parser, and anything no other route took. */
    private void registry(HttpServerRequest req, Started started, AccessControl access, boolean hop) {
        Route route;
        try {
            HostedRoute own = hosted == null || hop ? null : HostedRoute.parse(config, req.path(), req.getParam("ns"));
            if (own != null) {
                hosted(req, started, access, own);
                return;
            }
            route = parser.parse(req.path(), req.getParam("ns"));
            if (req.method() != HttpMethod.GET && req.method() != HttpMethod.HEAD) {
                throw RegistryError.unsupported("this is a pull-through mirror: " + req.method() + " is not supported");
            }
        } catch (RegistryError e) {
            counted(req, started, e.status == 405 ? "unsupported" : "invalid", null);
            writeError(req, e);
            return;
        } catch (RuntimeException e) {
            LOG.error("cannot parse request {} {}", req.method(), req.path(), e);
            counted(req, started, "invalid", null);
            writeError(req, new RegistryError(400, "UNSUPPORTED", "malformed request"));
            return;
        }
        HttpServerResponse resp = req.response();
        counted(req, started, route.kind().label, () -> {
            if (route.kind() == Route.Kind.MANIFEST && route.tag() != null && resp.getStatusCode() == 200) {
                pulls.pulled(route.upstream().name() + "/" + route.repository());
            }
        });
        Future<Void> answer;
        try {
            answer = access == null ? dispatch(route, req, hop) : access.admit(req, true, id -> switch (route.kind()) {
                case BASE -> access.base(req, id);
                default -> access.pull(req, id, route.upstream().name() + "/" + route.repository(), route.clientName());
            }).compose(id -> dispatch(route, req, hop));
        } catch (RegistryError e) {
            answer = Future.failedFuture(e);
        }
        answer.onFailure(err -> {
            if (err instanceof RegistryError e && e.isUpstreamFailure() && e.status != 429) {
                LOG.warn("{} {}: {}", req.method(), req.path(), e.getMessage());
            }
            failed(req, err, "a " + route.kind().label + " request", route);
        });
    }

    /**
     * A request for a hosted repository: a pull by the rules' {@code pull} lists, a push (an upload, a
     * manifest, a deletion) by their {@code push} lists; without access rules nobody pushes. The
     * request stays paused until its body is read by the answer.
     */
    private void hosted(HttpServerRequest req, Started started, AccessControl access, HostedRoute route) {
        req.pause();
        counted(req, started, route.kind().label, null);
        boolean push = HostedRegistry.isPush(req);
        Future<Void> answer;
        if (access == null) {
            answer = push ? Future.failedFuture(new RegistryError(403, "DENIED", "pushes to " + route.name()
                    + " need an access rule that allows them (access.rules[].push)"))
                    : hosted.serve(route, req, name -> true);
        } else {
            answer = access.admit(req, true, id -> push ? access.push(req, id, route.name())
                    : access.pull(req, id, route.name(), route.name()))
                    .compose(id -> hosted.serve(route, req, name -> access.pull(req, id, name, name) == null));
        }
        answer.onFailure(err -> {
            if (!req.isEnded() && !req.response().headWritten()) {
                // The body was not read (refused before, or cut short): the answer goes out, then the
                // connection closes, since the client may still be sending a body nobody will read (it
                // would wait for its window, and never read the answer, until the keep-alive timeout).
                req.response().putHeader(HttpHeaders.CONNECTION, "close");
                req.response().bodyEndHandler(v -> req.connection().close());
                // What still arrives until then is taken and dropped: left queued in a paused request,
                // Vert.x would not release its buffers when the connection closes.
                req.handler(b -> { });
                req.exceptionHandler(e -> { });
                req.resume();
            }
            failed(req, err, "a hosted " + route.kind().label + " request", req.method() + " " + req.path());
        });
    }

    /**
     * Ends a request whose answer failed: the OCI error if nothing was sent yet, else a reset (the
     * client must not take a part for the whole). {@code what} and {@code request} name it if the
     * failure was unexpected.
     */
    private static void failed(HttpServerRequest req, Throwable err, String what, Object request) {
        HttpServerResponse resp = req.response();
        if (resp.headWritten() || resp.ended()) {
            // Part of the answer is out: the connection breaks, so the client cannot take a part for the
            // whole. A stream that broke (its upstream, the disk, the client) was logged where it broke.
            if (!brokenStream(err)) {
                internal(what, request, err);
            }
            resp.reset();
            return;
        }
        writeError(req, err instanceof RegistryError re ? re : internal(what, request, err));
    }

    /** Whether {@code err} is how a stream ends when a side of it fails, rather than a bug. */
    private static boolean brokenStream(Throwable err) {
        return err instanceof RegistryError || err instanceof dev.registrymirror.proxy.blob.StorageUnavailable
                || err instanceof io.vertx.core.http.HttpClosedException || err instanceof java.io.IOException
                || err instanceof io.vertx.core.VertxException;
    }

    private Future<Void> dispatch(Route route, HttpServerRequest req, boolean hop) {
        return switch (route.kind()) {
            case BASE -> req.response().putHeader(HttpHeaders.CONTENT_TYPE, "application/json").end("{}");
            case BLOB -> blobs.serve(route, upstream(route), req, hop);
            case MANIFEST -> manifests.serve(route, upstream(route), req, hop);
            case TAGS -> tagLists.serve(route, upstream(route), req);
            case REFERRERS -> referrers.serve(route, upstream(route), req);
        };
    }

    private UpstreamClient upstream(Route route) {
        return upstreams.get(route.upstream().name());
    }

    private static RegistryError internal(String what, Object request, Throwable err) {
        // An Error that failed a future on the way (a continuation threw it) is as fatal as one on a thread.
        if (!Fatal.check(what, err)) {
            LOG.error("{} failed unexpectedly", request, err);
        }
        return new RegistryError(500, "UNKNOWN", "internal error");
    }

    /**
     * Answers a request the HTTP decoder could not read (a request line or headers too long, bad
     * syntax): 414, 431 or 400 with an OCI error body, then the connection closes.
     */
    public static void invalidRequest(HttpServerRequest req) {
        Throwable cause = req.decoderResult().cause();
        RegistryError e;
        if (cause instanceof TooLongHttpLineException) {
            e = new RegistryError(414, "UNSUPPORTED", "request line too long");
        } else if (cause instanceof TooLongHttpHeaderException) {
            e = new RegistryError(431, "UNSUPPORTED", "request headers too large");
        } else {
            e = new RegistryError(400, "UNSUPPORTED", "malformed HTTP request");
        }
        req.response().putHeader(HttpHeaders.CONNECTION, "close");
        writeError(req, e);
    }

    /**
     * Writes the OCI error body (headers only for {@code HEAD}). Whatever headers an earlier attempt
     * had set go (a blob's {@code Cache-Control: max-age=31536000} on an error would let a cache in
     * front keep the error for a year); only the API version and {@code Connection} stay.
     */
    public static void writeError(HttpServerRequest req, RegistryError e) {
        HttpServerResponse resp = req.response();
        Buffer body = new JsonObject().put("errors", new JsonArray().add(new JsonObject()
                .put("code", e.code).put("message", e.getMessage()).putNull("detail"))).toBuffer();
        String connection = resp.headers().get(HttpHeaders.CONNECTION);
        resp.headers().clear();
        resp.putHeader(API_VERSION_HEADER, "registry/2.0");
        if (connection != null) {
            resp.putHeader(HttpHeaders.CONNECTION, connection);
        }
        resp.setChunked(false);
        resp.setStatusCode(e.status).putHeader(HttpHeaders.CONTENT_TYPE, "application/json");
        if (e.retryAfter != null) {
            resp.putHeader(HttpHeaders.RETRY_AFTER, e.retryAfter);
        }
        if (e.challenge != null) {
            resp.putHeader("WWW-Authenticate", e.challenge);
        }
        if (e.unsatisfiedSize >= 0) {
            resp.putHeader(HttpHeaders.CONTENT_RANGE, "bytes */" + e.unsatisfiedSize);
        }
        if (e.uploadLocation != null) {
            resp.putHeader(HttpHeaders.LOCATION, e.uploadLocation).putHeader("Range", e.uploadRange);
        }
        if (req.method() == HttpMethod.HEAD) {
            resp.putHeader(HttpHeaders.CONTENT_LENGTH, Integer.toString(body.length())).end();
        } else {
            resp.putHeader(HttpHeaders.CONTENT_LENGTH, Integer.toString(body.length())).end(body);
        }
    }
}
