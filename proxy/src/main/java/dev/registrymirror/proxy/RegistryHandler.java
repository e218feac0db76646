package dev.registrymirror.proxy;

import dev.registrymirror.config.MirrorConfig;
import dev.registrymirror.metrics.MirrorMetrics;
import io.vertx.core.Future;
import io.vertx.core.Handler;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.HttpServerRequest;
import io.vertx.core.http.HttpServerResponse;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.util.Map;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The HTTP entry point: parses the route, hands it to the service for its kind, and is the one
 * place where failures become OCI error responses ({@code {"errors":[{code,message,detail}]}}).
 */
final class RegistryHandler implements Handler<HttpServerRequest> {
    private static final Logger LOG = LoggerFactory.getLogger(RegistryHandler.class);
    static final String API_VERSION_HEADER = "Docker-Distribution-API-Version";

    private final RouteParser parser;
    private final Map<String, UpstreamClient> upstreams;
    private final BlobService blobs;
    private final ManifestService manifests;
    private final PassThrough passThrough;
    private final MirrorMetrics metrics;

    RegistryHandler(MirrorConfig config, Map<String, UpstreamClient> upstreams, BlobService blobs,
                    ManifestService manifests, PassThrough passThrough, MirrorMetrics metrics) {
        this.parser = new RouteParser(config);
        this.upstreams = upstreams;
        this.blobs = blobs;
        this.manifests = manifests;
        this.passThrough = passThrough;
        this.metrics = metrics;
    }

    @Override
    public void handle(HttpServerRequest req) {
        long start = System.nanoTime();
        HttpServerResponse resp = req.response();
        resp.putHeader(API_VERSION_HEADER, "registry/2.0");
        Route route;
        try {
            route = parser.parse(req.path(), req.getParam("ns"));
            if (req.method() != HttpMethod.GET && req.method() != HttpMethod.HEAD) {
                throw RegistryError.unsupported("this is a pull-through mirror: " + req.method() + " is not supported");
            }
        } catch (RegistryError e) {
            String label = e.status == 405 ? "unsupported" : "invalid";
            resp.endHandler(v -> metrics.requestServed(label, req.method().name(), resp.getStatusCode(),
                    System.nanoTime() - start));
            writeError(req, e);
            return;
        } catch (RuntimeException e) {
            LOG.error("cannot parse request {} {}", req.method(), req.path(), e);
            writeError(req, new RegistryError(400, "UNSUPPORTED", "malformed request"));
            return;
        }
        resp.endHandler(v -> metrics.requestServed(route.kind().label, req.method().name(), resp.getStatusCode(),
                System.nanoTime() - start));
        Future<Void> answer;
        try {
            answer = dispatch(route, req);
        } catch (RegistryError e) {
            answer = Future.failedFuture(e);
        }
        answer.onFailure(err -> {
            RegistryError e = err instanceof RegistryError re ? re : internal(route, err);
            if (e.isUpstreamFailure() && e.status != 429) {
                LOG.warn("{} {}: {}", req.method(), req.path(), e.getMessage());
            }
            if (resp.headWritten() || resp.ended()) {
                resp.reset();
            } else {
                writeError(req, e);
            }
        });
    }

    private Future<Void> dispatch(Route route, HttpServerRequest req) {
        return switch (route.kind()) {
            case BASE -> req.response().putHeader(HttpHeaders.CONTENT_TYPE, "application/json").end("{}");
            case METRICS -> req.response().putHeader(HttpHeaders.CONTENT_TYPE, MirrorMetrics.CONTENT_TYPE)
                    .end(metrics.scrape());
            case BLOB -> blobs.serve(route, upstream(route), req);
            case MANIFEST -> manifests.serve(route, upstream(route), req);
            case TAGS -> passThrough.tags(route, upstream(route), req);
            case REFERRERS -> passThrough.referrers(route, upstream(route), req);
        };
    }

    private UpstreamClient upstream(Route route) {
        return upstreams.get(route.upstream().name());
    }

    private static RegistryError internal(Route route, Throwable err) {
        LOG.error("{} failed unexpectedly", route, err);
        return new RegistryError(500, "UNKNOWN", "internal error");
    }

    /** Writes the OCI error body (headers only for {@code HEAD}). */
    static void writeError(HttpServerRequest req, RegistryError e) {
        HttpServerResponse resp = req.response();
        String body = new JsonObject().put("errors", new JsonArray().add(new JsonObject()
                .put("code", e.code).put("message", e.getMessage()).putNull("detail"))).encode();
        resp.setStatusCode(e.status).putHeader(HttpHeaders.CONTENT_TYPE, "application/json");
        resp.headers().remove(HttpHeaders.CONTENT_RANGE).remove("Docker-Content-Digest").remove(HttpHeaders.ETAG);
        if (e.retryAfter != null) {
            resp.putHeader(HttpHeaders.RETRY_AFTER, e.retryAfter);
        }
        if (req.method() == HttpMethod.HEAD) {
            resp.putHeader(HttpHeaders.CONTENT_LENGTH, Integer.toString(body.length())).end();
        } else {
            resp.putHeader(HttpHeaders.CONTENT_LENGTH, Integer.toString(body.length())).end(body);
        }
    }
}
