package dev.registrymirror.proxy.manifest;

import dev.registrymirror.proxy.route.Route;
import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.upstream.Bodies;
import dev.registrymirror.proxy.upstream.UpstreamClient;

import com.github.benmanes.caffeine.cache.Cache;
import com.github.benmanes.caffeine.cache.Caffeine;
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
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Endpoints answered by the upstream each time: {@code tags/list} (with {@code n} and {@code last},
 * and the {@code Link} header rewritten to the client's name) and {@code referrers} (an empty index
 * when the upstream has none or does not know the endpoint). The last good answer of each tag list
 * is kept in memory, and served when the upstream cannot answer (down, failing, rate-limiting).
 */
public final class PassThrough {
    private static final Logger LOG = LoggerFactory.getLogger(PassThrough.class);
    public static final int MAX_BODY = 4 * 1024 * 1024;
    /** Memory for the last good tag lists: thousands of typical ones. */
    public static final long TAG_LISTS_MEMORY_BYTES = 16L << 20;
    private static final String EMPTY_INDEX =
            "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[]}";

    private final MirrorMetrics metrics;
    private final Cache<String, Answer> lastTagLists;

    public PassThrough(MirrorMetrics metrics) {
        this(metrics, TAG_LISTS_MEMORY_BYTES);
    }

    public PassThrough(MirrorMetrics metrics, long tagListsMemoryBytes) {
        this.metrics = metrics;
        this.lastTagLists = Caffeine.newBuilder().maximumWeight(tagListsMemoryBytes)
                .weigher((String key, Answer a) -> key.length() + a.body().length()).build();
    }

    /** A body the upstream answered, with the headers passed on. */
    private record Answer(Buffer body, String type, String link) {
    }

    public Future<Void> tags(Route route, UpstreamClient upstream, HttpServerRequest req) {
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
        String key = upstream.name() + path;
        return upstream.send(HttpMethod.GET, path, route.repository(), MultiMap.caseInsensitiveMultiMap(), "tags")
                .compose(resp -> {
                    if (resp.statusCode() != 200) {
                        return Future.failedFuture(upstream.failure(resp, "NAME_UNKNOWN",
                                "repository " + route.clientName()));
                    }
                    String link = resp.getHeader("Link");
                    String type = resp.getHeader(HttpHeaders.CONTENT_TYPE);
                    return Bodies.read(upstream, resp, MAX_BODY, "tag list").map(b -> new Answer(b, type, link));
                })
                .onSuccess(answer -> lastTagLists.put(key, answer))
                .recover(err -> {
                    RegistryError e = UpstreamClient.transportError(upstream.name(), "upstream", err);
                    Answer kept = e.isUpstreamFailure() ? lastTagLists.getIfPresent(key) : null;
                    if (kept == null) {
                        return Future.failedFuture(e);
                    }
                    metrics.staleServed(upstream.name(), e.staleReason());
                    LOG.warn("upstream {}: serving the last tag list of {} it gave: {}", upstream.name(),
                            route.repository(), e.getMessage());
                    return Future.succeededFuture(kept);
                })
                .compose(answer -> {
                    if (answer.link() != null) {
                        req.response().putHeader("Link", answer.link().replace("/v2/" + route.repository() + "/",
                                "/v2/" + route.clientName() + "/"));
                    }
                    return send(answer, req);
                });
    }

    public Future<Void> referrers(Route route, UpstreamClient upstream, HttpServerRequest req) {
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
            String type = resp.getHeader(HttpHeaders.CONTENT_TYPE);
            return Bodies.read(upstream, resp, MAX_BODY, "referrers answer").compose(b -> send(new Answer(b, type, null), req));
        });
    }

    private static Future<Void> send(Answer answer, HttpServerRequest req) {
        if (answer.type() != null) {
            req.response().putHeader(HttpHeaders.CONTENT_TYPE, answer.type());
        }
        if (req.method() == HttpMethod.HEAD) {
            return req.response().putHeader(HttpHeaders.CONTENT_LENGTH, Integer.toString(answer.body().length())).end();
        }
        return req.response().end(answer.body());
    }
}
