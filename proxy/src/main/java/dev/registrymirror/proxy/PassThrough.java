package dev.registrymirror.proxy;

import dev.registrymirror.metrics.MirrorMetrics;
import io.vertx.core.Future;
import io.vertx.core.MultiMap;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpClientResponse;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.HttpServerRequest;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;

/**
 * Endpoints answered by the upstream each time, not cached: {@code tags/list} (with {@code n} and
 * {@code last}, and the {@code Link} header rewritten to the client's name) and {@code referrers}
 * (an empty index when the upstream has none or does not know the endpoint).
 */
final class PassThrough {
    static final int MAX_BODY = 4 * 1024 * 1024;
    private static final String EMPTY_INDEX =
            "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[]}";

    private final MirrorMetrics metrics;

    PassThrough(MirrorMetrics metrics) {
        this.metrics = metrics;
    }

    Future<Void> tags(Route route, UpstreamClient upstream, HttpServerRequest req) {
        StringBuilder query = new StringBuilder();
        String n = req.getParam("n");
        if (n != null) {
            if (!n.matches("\\d{1,6}")) {
                throw new RegistryError(400, "PAGINATION_NUMBER_INVALID", "n must be a number, not " + n);
            }
            query.append("?n=").append(n);
        }
        String last = req.getParam("last");
        if (last != null) {
            query.append(query.length() == 0 ? '?' : '&').append("last=")
                    .append(URLEncoder.encode(last, StandardCharsets.UTF_8));
        }
        String path = "/v2/" + route.repository() + "/tags/list" + query;
        return upstream.send(HttpMethod.GET, path, route.repository(), MultiMap.caseInsensitiveMultiMap(), "tags")
                .compose(resp -> {
                    if (resp.statusCode() != 200) {
                        return Future.failedFuture(upstream.failure(resp, "NAME_UNKNOWN",
                                "repository " + route.clientName()));
                    }
                    String link = resp.getHeader("Link");
                    if (link != null) {
                        req.response().putHeader("Link", link.replace("/v2/" + route.repository() + "/",
                                "/v2/" + route.clientName() + "/"));
                    }
                    return relay(upstream, resp, req);
                });
    }

    Future<Void> referrers(Route route, UpstreamClient upstream, HttpServerRequest req) {
        String artifactType = req.getParam("artifactType");
        String path = "/v2/" + route.repository() + "/referrers/" + route.digest()
                + (artifactType == null ? "" : "?artifactType=" + URLEncoder.encode(artifactType, StandardCharsets.UTF_8));
        MultiMap headers = MultiMap.caseInsensitiveMultiMap().add(HttpHeaders.ACCEPT, MediaTypes.OCI_INDEX);
        return upstream.send(HttpMethod.GET, path, route.repository(), headers, "referrers").compose(resp -> {
            if (resp.statusCode() == 404) {
                UpstreamClient.discard(resp);
                return req.response().putHeader(HttpHeaders.CONTENT_TYPE, MediaTypes.OCI_INDEX).end(EMPTY_INDEX);
            }
            if (resp.statusCode() != 200) {
                return Future.failedFuture(upstream.failure(resp, "MANIFEST_UNKNOWN", "referrers of " + route.digest()));
            }
            String filters = resp.getHeader("OCI-Filters-Applied");
            if (filters != null) {
                req.response().putHeader("OCI-Filters-Applied", filters);
            }
            return relay(upstream, resp, req);
        });
    }

    private Future<Void> relay(UpstreamClient upstream, HttpClientResponse resp, HttpServerRequest req) {
        String type = resp.getHeader(HttpHeaders.CONTENT_TYPE);
        Future<Buffer> whole = resp.body();
        resp.resume();
        return whole.compose(body -> {
            metrics.upstreamBytes(upstream.name(), body.length());
            if (body.length() > MAX_BODY) {
                return Future.failedFuture(RegistryError.badGateway(upstream.name(), "answer too large", "protocol"));
            }
            if (type != null) {
                req.response().putHeader(HttpHeaders.CONTENT_TYPE, type);
            }
            if (req.method() == HttpMethod.HEAD) {
                return req.response().putHeader(HttpHeaders.CONTENT_LENGTH, Integer.toString(body.length())).end();
            }
            return req.response().end(body);
        }, err -> Future.failedFuture(UpstreamClient.transportError(upstream.name(), "upstream", err)));
    }
}
