package dev.registrymirror.proxy.http;

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
import io.vertx.core.Future;
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
    private volatile OperatorRoutes operatorRoutes;
    /** {@code access:}; null when nothing is restricted. */
    private final dev.registrymirror.proxy.access.AccessControl access;
    private final PullCounts pulls = new PullCounts();

    public RegistryHandler(Vertx vertx, MirrorConfig config, Map<String, UpstreamClient> upstreams, BlobService blobs,
                    ManifestService manifests, TagLists tagLists, Referrers referrers, MirrorMetrics metrics,
                    ConnectionGuard connections, dev.registrymirror.proxy.access.AccessControl access) {
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

    /** Routes asked before the registry API's (the admin API, the status page). */
    public void operatorRoutes(OperatorRoutes routes) {
        this.operatorRoutes = routes;
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
        handle(req, false);
    }

    /** A request of the mirror's own (the prefetcher's, from the loopback listener): no access rules apply. */
    public void handleInternal(HttpServerRequest req) {
        handle(req, true);
    }

    private void handle(HttpServerRequest req, boolean internal) {
        long start = System.nanoTime();
        dev.registrymirror.proxy.access.AccessControl access = internal ? null : this.access;
        HttpServerResponse resp = req.response();
        connections.requestStarted(req);
        resp.putHeader(API_VERSION_HEADER, "registry/2.0");
        if (draining) {
            resp.putHeader(HttpHeaders.CONNECTION, "close");
            writeError(req, RegistryError.shuttingDown());
            return;
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
        try {
            req.params(); // decodes the query once: a malformed one is the client's error, here, for every route
        } catch (IllegalArgumentException e) {
            resp.endHandler(v -> {
                done.run();
                metrics.requestServed("invalid", req.method().name(), resp.getStatusCode(), System.nanoTime() - start);
            });
            writeError(req, new RegistryError(400, "UNSUPPORTED", "malformed query (a bad %-escape)"));
            return;
        }
        if (access != null) {
            RegistryError outside = access.network(req);
            String label = outside != null ? "denied"
                    : req.path().equals(dev.registrymirror.proxy.access.AccessControl.TOKEN_PATH) ? "token" : null;
            if (label != null) {
                resp.endHandler(v -> {
                    done.run();
                    metrics.requestServed(label, req.method().name(), resp.getStatusCode(), System.nanoTime() - start);
                });
                Future<Void> answer = outside != null ? Future.failedFuture(outside) : access.serveToken(req);
                answer.onFailure(err -> failed(req, err, "a token request", req.path()));
                return;
            }
        }
        OperatorRoutes extra = operatorRoutes;
        String operatorLabel = extra == null ? null : extra.route(req);
        if (operatorLabel != null) {
            resp.endHandler(v -> {
                done.run();
                metrics.requestServed(operatorLabel, req.method().name(), resp.getStatusCode(),
                        System.nanoTime() - start);
            });
            Future<Void> answer;
            try {
                boolean admin = operatorLabel.equals("admin");
                // The admin API's Authorization header is its token, not a client's credentials.
                answer = access == null ? extra.serve(req, name -> true) : access.admit(req, !admin,
                        id -> admin ? access.admin(req, id) : access.metrics(req, id))
                        .compose(id -> extra.serve(req, name -> access.mayPull(id, name)));
            } catch (RuntimeException e) {
                answer = Future.failedFuture(e);
            }
            answer.onFailure(err -> failed(req, err, "a " + operatorLabel + " request", req.method() + " " + req.path()));
            return;
        }
        Route route;
        try {
            route = parser.parse(req.path(), req.getParam("ns"));
            if (req.method() != HttpMethod.GET && req.method() != HttpMethod.HEAD) {
                throw RegistryError.unsupported("this is a pull-through mirror: " + req.method() + " is not supported");
            }
        } catch (RegistryError e) {
            String label = e.status == 405 ? "unsupported" : "invalid";
            resp.endHandler(v -> {
                done.run();
                metrics.requestServed(label, req.method().name(), resp.getStatusCode(), System.nanoTime() - start);
            });
            writeError(req, e);
            return;
        } catch (RuntimeException e) {
            LOG.error("cannot parse request {} {}", req.method(), req.path(), e);
            resp.endHandler(v -> done.run());
            writeError(req, new RegistryError(400, "UNSUPPORTED", "malformed request"));
            return;
        }
        resp.endHandler(v -> {
            done.run();
            metrics.requestServed(route.kind().label, req.method().name(), resp.getStatusCode(),
                    System.nanoTime() - start);
            if (route.kind() == Route.Kind.MANIFEST && route.tag() != null && resp.getStatusCode() == 200) {
                pulls.pulled(route.upstream().name() + "/" + route.repository());
            }
        });
        Future<Void> answer;
        try {
            answer = access == null ? dispatch(route, req) : access.admit(req, true, id -> switch (route.kind()) {
                case BASE -> access.base(req, id);
                case METRICS -> access.metrics(req, id);
                default -> access.pull(req, id, route.upstream().name() + "/" + route.repository(), route.clientName());
            }).compose(id -> dispatch(route, req));
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
     * Ends a request whose answer failed: the OCI error if nothing was sent yet, else a reset (the
     * client must not take a part for the whole). {@code what} and {@code request} name it if the
     * failure was unexpected.
     */
    private static void failed(HttpServerRequest req, Throwable err, String what, Object request) {
        RegistryError e = err instanceof RegistryError re ? re : internal(what, request, err);
        HttpServerResponse resp = req.response();
        if (resp.headWritten() || resp.ended()) {
            resp.reset();
        } else {
            writeError(req, e);
        }
    }

    private Future<Void> dispatch(Route route, HttpServerRequest req) {
        return switch (route.kind()) {
            case BASE -> req.response().putHeader(HttpHeaders.CONTENT_TYPE, "application/json").end("{}");
            case METRICS -> req.response().putHeader(HttpHeaders.CONTENT_TYPE, MirrorMetrics.CONTENT_TYPE)
                    .end(metrics.scrape());
            case BLOB -> blobs.serve(route, upstream(route), req);
            case MANIFEST -> manifests.serve(route, upstream(route), req);
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
        if (req.method() == HttpMethod.HEAD) {
            resp.putHeader(HttpHeaders.CONTENT_LENGTH, Integer.toString(body.length())).end();
        } else {
            resp.putHeader(HttpHeaders.CONTENT_LENGTH, Integer.toString(body.length())).end(body);
        }
    }
}
