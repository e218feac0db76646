package dev.registrymirror.proxy.manifest;

import dev.registrymirror.cache.Digest;
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

/**
 * {@code GET /v2/<name>/referrers/<digest>} (OCI 1.1): the image index of what refers to a manifest
 * (signatures, SBOMs, attestations).
 *
 * <p>An upstream with the referrers API answers 200, even for a subject it does not know; that
 * answer is passed on. One without it answers 404, and clients (cosign, notation, oras) then use the
 * referrers tag schema: an index stored under the tag {@code <algorithm>-<hex>} of the subject in
 * the same repository. The mirror does what they would: it answers from that tag (filtered by
 * {@code artifactType} when asked, saying so in {@code OCI-Filters-Applied}), and with an empty
 * index only when that tag is absent too. Answering "supported, none" for every 404 would hide the
 * signatures kept with the tag schema.
 */
public final class Referrers {
    /** The largest answer read from an upstream. */
    public static final int MAX_BODY = 4 * 1024 * 1024;

    public Future<Void> serve(Route route, UpstreamClient upstream, HttpServerRequest req) {
        String artifactType = req.getParam("artifactType");
        String path = "/v2/" + route.repository() + "/referrers/" + route.digest()
                + (artifactType == null ? "" : "?artifactType=" + URLEncoder.encode(artifactType, StandardCharsets.UTF_8));
        MultiMap headers = MultiMap.caseInsensitiveMultiMap().add(HttpHeaders.ACCEPT, MediaTypes.OCI_INDEX);
        return Bodies.withRoom(upstream, room -> upstream.send(HttpMethod.GET, path, route.repository(), headers,
                "referrers").compose(resp -> {
            if (resp.statusCode() == 404) {
                UpstreamClient.discard(resp);
                return fromTagSchema(route, upstream, req, artifactType, room); // the same room: one body at a time
            }
            if (resp.statusCode() != 200) {
                return Future.failedFuture(upstream.failure(resp, "MANIFEST_UNKNOWN", "referrers of " + route.digest()));
            }
            String filters = resp.getHeader("OCI-Filters-Applied");
            if (filters != null) {
                req.response().putHeader("OCI-Filters-Applied", filters);
            }
            String type = resp.getHeader(HttpHeaders.CONTENT_TYPE);
            return Bodies.read(upstream, resp, MAX_BODY, "referrers answer", room,
                    bytes -> send(req, type != null ? type : MediaTypes.OCI_INDEX, Buffer.buffer(bytes)));
        }));
    }

    /** The referrers tag schema: the index under the tag {@code <algorithm>-<hex>} of the subject. */
    private Future<Void> fromTagSchema(Route route, UpstreamClient upstream, HttpServerRequest req,
                                       String artifactType, dev.registrymirror.proxy.upstream.BodyMemory.Lease room) {
        String tag = tagOf(route.digest());
        MultiMap headers = MultiMap.caseInsensitiveMultiMap().add(HttpHeaders.ACCEPT, MediaTypes.OCI_INDEX);
        return upstream.send(HttpMethod.GET, "/v2/" + route.repository() + "/manifests/" + tag, route.repository(),
                headers, "referrers").compose(resp -> {
                    if (resp.statusCode() == 404) {
                        UpstreamClient.discard(resp);
                        return send(req, MediaTypes.OCI_INDEX, index(new JsonArray()).toBuffer());
                    }
                    if (resp.statusCode() != 200) {
                        return Future.failedFuture(upstream.failure(resp, "MANIFEST_UNKNOWN",
                                "referrers of " + route.digest() + " (tag " + tag + ")"));
                    }
                    return Bodies.read(upstream, resp, MAX_BODY, "referrers index " + tag, room, bytes -> {
                        JsonArray manifests;
                        try {
                            manifests = new JsonObject(Buffer.buffer(bytes)).getJsonArray("manifests");
                        } catch (RuntimeException e) {
                            manifests = null;
                        }
                        if (manifests == null) {
                            upstream.countError("protocol");
                            return Future.failedFuture(RegistryError.badGateway(upstream.name(),
                                    "the referrers tag " + tag + " holds no image index", "protocol"));
                        }
                        if (artifactType != null) {
                            JsonArray kept = new JsonArray();
                            for (Object m : manifests) {
                                if (m instanceof JsonObject o && artifactType.equals(o.getString("artifactType"))) {
                                    kept.add(o);
                                }
                            }
                            manifests = kept;
                            req.response().putHeader("OCI-Filters-Applied", "artifactType");
                        }
                        return send(req, MediaTypes.OCI_INDEX, index(manifests).toBuffer());
                    });
                });
    }

    /** The tag under which the referrers tag schema keeps the referrers of {@code subject}. */
    static String tagOf(Digest subject) {
        String algorithm = subject.algorithm();
        String hex = subject.hex();
        return algorithm.substring(0, Math.min(32, algorithm.length())) + "-" + hex.substring(0, Math.min(64, hex.length()));
    }

    /** An OCI index of {@code manifests}: what the referrers API answers. */
    public static JsonObject index(JsonArray manifests) {
        return new JsonObject().put("schemaVersion", 2).put("mediaType", MediaTypes.OCI_INDEX).put("manifests", manifests);
    }

    /** Answers {@code body} as {@code type} (headers only, with its length, for {@code HEAD}). */
    static Future<Void> send(HttpServerRequest req, String type, Buffer body) {
        req.response().putHeader(HttpHeaders.CONTENT_TYPE, type);
        if (req.method() == HttpMethod.HEAD) {
            return req.response().putHeader(HttpHeaders.CONTENT_LENGTH, Integer.toString(body.length())).end();
        }
        return req.response().end(body);
    }
}
