package dev.registrymirror.proxy.manifest;

import com.github.benmanes.caffeine.cache.Cache;
import com.github.benmanes.caffeine.cache.Caffeine;
import dev.registrymirror.metrics.MirrorMetrics;
import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.route.Route;
import dev.registrymirror.proxy.upstream.Bodies;
import dev.registrymirror.proxy.upstream.UpstreamClient;
import io.vertx.core.Future;
import io.vertx.core.MultiMap;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.HttpServerRequest;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.TreeSet;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@code GET /v2/<name>/tags/list?n=&last=}, answered as the distribution spec (v1.1.1) says
 * whatever the upstream does: tags in lexical order, exactly {@code n} of them unless fewer remain,
 * {@code n=0} an empty list without {@code Link}, {@code last} exclusive, and
 * {@code Link: </v2/<name>/tags/list?n=<n>&last=<last sent>>; rel="next"} (with the client's
 * {@code ns}) when more remain. CNCF Distribution 2.8 ignores {@code n} and {@code last} and does not
 * sort; Docker Hub pages as asked. So the upstream is asked with the client's {@code n} and
 * {@code last}, and its answer is filtered, sorted and cut here: more remain when the upstream sent
 * more than {@code n} (it ignored {@code n}) or said so with a {@code Link} of its own (it paged).
 * The mirror's {@code Link} is built from what it sends, never copied from the upstream, so it never
 * points elsewhere.
 *
 * <p>The upstream is asked each time (tag lists are not needed to pull); its last good answer for
 * each request is kept in memory and served while it fails, is down or rate-limits.
 */
public final class TagLists {
    private static final Logger LOG = LoggerFactory.getLogger(TagLists.class);
    /** The largest tag list read from an upstream. */
    public static final int MAX_BODY = 4 * 1024 * 1024;
    /** Memory for the last good tag lists: thousands of typical ones. */
    public static final long MEMORY_BYTES = 16L << 20;
    /** The largest {@code n} accepted. */
    static final int MAX_N = 100_000;

    private final MirrorMetrics metrics;
    private final Cache<String, Answer> lastGood;

    public TagLists(MirrorMetrics metrics) {
        this(metrics, MEMORY_BYTES);
    }

    TagLists(MirrorMetrics metrics, long memoryBytes) {
        this.metrics = metrics;
        this.lastGood = Caffeine.newBuilder().maximumWeight(memoryBytes)
                .weigher((String key, Answer a) -> key.length() + a.body().length() + 64).build();
    }

    /** What the client is sent: the body, and the {@code Link} to the next page or null. */
    private record Answer(Buffer body, String link) {
    }

    public Future<Void> serve(Route route, UpstreamClient upstream, HttpServerRequest req) {
        Integer n = count(req.getParam("n"));
        String last = req.getParam("last");
        StringBuilder query = new StringBuilder();
        if (n != null) {
            query.append("?n=").append(Math.max(n, 1)); // n=0: still ask, so that an unknown repository is a 404
        }
        if (last != null) {
            query.append(query.length() == 0 ? '?' : '&').append("last=").append(encode(last));
        }
        String path = "/v2/" + route.repository() + "/tags/list" + query;
        String key = upstream.name() + path + (n != null && n == 0 ? "#0" : "");
        return Bodies.withRoom(upstream, room -> upstream.send(HttpMethod.GET, path, route.repository(),
                        MultiMap.caseInsensitiveMultiMap(), "tags")
                .compose(resp -> {
                    if (resp.statusCode() != 200) {
                        return Future.failedFuture(upstream.failure(resp, "NAME_UNKNOWN",
                                "repository " + route.clientName()));
                    }
                    boolean upstreamHasMore = resp.getHeader("Link") != null;
                    return Bodies.read(upstream, resp, MAX_BODY, "tag list", room,
                            bytes -> page(upstream, route, req, Buffer.buffer(bytes), n, last, upstreamHasMore));
                }))
                .onSuccess(answer -> lastGood.put(key, answer))
                .recover(err -> {
                    RegistryError e = UpstreamClient.transportError(upstream.name(), "upstream", err);
                    Answer kept = e.isUpstreamFailure() ? lastGood.getIfPresent(key) : null;
                    if (kept == null) {
                        return Future.failedFuture(e);
                    }
                    metrics.staleServed(upstream.name(), e.staleReason());
                    LOG.warn("upstream {}: serving the last tag list of {} it gave: {}", upstream.name(),
                            route.repository(), e.getMessage());
                    return Future.succeededFuture(kept);
                })
                .compose(answer -> send(answer, req));
    }

    /** The client's {@code n}, or null when not given. */
    private static Integer count(String n) {
        if (n == null) {
            return null;
        }
        if (!n.matches("\\d{1,6}") || Integer.parseInt(n) > MAX_N) {
            throw new RegistryError(400, "PAGINATION_NUMBER_INVALID", "n must be a number from 0 to " + MAX_N
                    + ", not " + n);
        }
        return Integer.parseInt(n);
    }

    private Future<Answer> page(UpstreamClient upstream, Route route, HttpServerRequest req, Buffer body, Integer n,
                                String last, boolean upstreamHasMore) {
        TreeSet<String> tags = new TreeSet<>();
        try {
            JsonArray list = new JsonObject(body).getJsonArray("tags"); // null for a repository without tags
            if (list != null) {
                for (Object t : list) {
                    if (!(t instanceof String s)) {
                        throw new IllegalArgumentException("a tag that is not a string");
                    }
                    if (last == null || s.compareTo(last) > 0) {
                        tags.add(s);
                    }
                }
            }
        } catch (RuntimeException e) {
            upstream.countError("protocol");
            return Future.failedFuture(RegistryError.badGateway(upstream.name(),
                    "answered a tag list that is not {\"name\":…,\"tags\":[…]}", "protocol"));
        }
        List<String> sent = new ArrayList<>(n == null ? tags.size() : Math.min(n, tags.size()));
        for (String t : tags) {
            if (n != null && sent.size() == n) {
                break;
            }
            sent.add(t);
        }
        boolean more = n != null ? n > 0 && (tags.size() > n || (upstreamHasMore && sent.size() == n))
                : upstreamHasMore && !sent.isEmpty();
        String link = null;
        if (more) {
            StringBuilder next = new StringBuilder("</v2/").append(route.clientName()).append("/tags/list?n=")
                    .append(n != null ? n : sent.size()).append("&last=").append(encode(sent.get(sent.size() - 1)));
            String ns = req.getParam("ns");
            if (ns != null) {
                next.append("&ns=").append(encode(ns));
            }
            link = next.append(">; rel=\"next\"").toString();
        }
        Buffer out = new JsonObject().put("name", route.clientName()).put("tags", new JsonArray(new ArrayList<>(sent)))
                .toBuffer();
        return Future.succeededFuture(new Answer(out, link));
    }

    private static Future<Void> send(Answer answer, HttpServerRequest req) {
        if (answer.link() != null) {
            req.response().putHeader("Link", answer.link());
        }
        return Referrers.send(req, "application/json", answer.body());
    }

    private static String encode(String s) {
        return URLEncoder.encode(s, StandardCharsets.UTF_8);
    }
}
