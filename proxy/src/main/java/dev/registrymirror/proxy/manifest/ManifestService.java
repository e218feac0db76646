package dev.registrymirror.proxy.manifest;

import dev.registrymirror.proxy.access.Provenance;
import dev.registrymirror.proxy.route.Route;
import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.upstream.Bodies;
import dev.registrymirror.proxy.upstream.UpstreamClient;
import dev.registrymirror.proxy.vertx.Blocking;
import dev.registrymirror.proxy.vertx.SingleFlight;
import dev.registrymirror.proxy.vertx.Slices;

import dev.registrymirror.cache.ContentKind;
import dev.registrymirror.cache.Digest;
import dev.registrymirror.cache.NotEnoughSpaceException;
import dev.registrymirror.cache.ManifestStore;
import dev.registrymirror.cache.ManifestStore.Manifest;
import dev.registrymirror.cache.TagStore;
import dev.registrymirror.cache.TagStore.TagEntry;
import dev.registrymirror.cache.TagStore.TagKey;
import dev.registrymirror.metrics.MirrorMetrics;
import io.vertx.core.Future;
import io.vertx.core.MultiMap;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpClientResponse;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.HttpServerRequest;
import io.vertx.core.http.HttpServerResponse;
import io.vertx.core.json.JsonObject;
import java.time.Clock;
import java.time.Instant;
import java.util.Optional;
import java.util.Set;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Manifests. By digest: local first, immutable, kept forever. By tag: the cached answer is served
 * for the upstream's {@code manifestTtl}; after that the upstream is asked with a {@code HEAD}
 * (which Docker Hub does not count against its rate limit) and the manifest fetched again only when
 * the digest changed. When the upstream cannot answer (unreachable, 5xx, 429, auth failure) an
 * expired tag is served anyway, logged and counted; a 404 means the tag is gone.
 *
 * <p>Concurrent misses for the same manifest share one upstream request.
 */
public final class ManifestService {
    private static final Logger LOG = LoggerFactory.getLogger(ManifestService.class);
    /** Larger manifests are refused, as the reference registry does. */
    public static final int MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

    private final Blocking blocking;
    private final ManifestStore manifests;
    private final TagStore tags;
    private final MirrorMetrics metrics;
    private final Clock clock;
    private final SingleFlight<String, Manifest> fetches = new SingleFlight<>();
    private final SingleFlight<TagKey, Optional<Manifest>> revalidations = new SingleFlight<>();
    /** Upstreams already reported as answering manifest HEADs without a digest. */
    private final Set<String> headsWithoutDigest = java.util.concurrent.ConcurrentHashMap.newKeySet();

    private final Provenance provenance;

    public ManifestService(Blocking blocking, ManifestStore manifests, TagStore tags, MirrorMetrics metrics, Clock clock,
                           Provenance provenance) {
        this.provenance = provenance;
        this.blocking = blocking;
        this.manifests = manifests;
        this.tags = tags;
        this.metrics = metrics;
        this.clock = clock;
    }

    public Future<Void> serve(Route route, UpstreamClient upstream, HttpServerRequest req) {
        Set<String> accepted = MediaTypes.accepted(req.headers().getAll(HttpHeaders.ACCEPT));
        Future<Served> answer = route.digest() != null
                ? byDigest(route, upstream, route.digest(), accepted)
                : byTag(route, upstream, accepted);
        return answer.compose(served -> {
            if (!MediaTypes.allows(accepted, served.manifest().mediaType())) {
                return Future.failedFuture(new RegistryError(404, "MANIFEST_UNKNOWN", "manifest "
                        + route.clientName() + (route.tag() != null ? ":" : "@") + route.reference() + " is " + served.manifest().mediaType()
                        + ", which the Accept header does not allow"));
            }
            return send(req, served);
        });
    }

    /** A manifest and whether it came from the upstream just now. */
    private record Served(Manifest manifest, boolean fromUpstream) {
    }

    /**
     * By digest: the store first (served under the request's name only as {@link Provenance} allows,
     * decided with the manifest in hand), else the upstream under that name.
     */
    private Future<Served> byDigest(Route route, UpstreamClient upstream, Digest digest, Set<String> accepted) {
        String name = Provenance.nameOf(route);
        return stored(digest).compose(found -> {
            if (found.isPresent()) {
                // Even when the client's Accept excludes its type: a digest names fixed bytes, so the
                // upstream could only send the same manifest again (serve() answers 404 then).
                Served served = new Served(found.get(), false);
                return provenance.mayServeStoredAsync(ContentKind.MANIFEST, digest, name).compose(allowed -> {
                    metrics.cacheHit("manifest");
                    return allowed ? Future.succeededFuture(served)
                            : provenance.confirm(ContentKind.MANIFEST, route, upstream).map(served);
                });
            }
            metrics.cacheMiss("manifest");
            return fetch(upstream, route, digest.toString(), accepted, false, null).map(m -> new Served(m, true));
        });
    }

    private Future<Served> byTag(Route route, UpstreamClient upstream, Set<String> accepted) {
        TagKey key = new TagKey(upstream.name(), route.repository(), route.tag());
        return tagEntry(key).compose(entry -> {
            if (entry.isEmpty()) {
                return fetchTag(route, upstream, key, accepted);
            }
            return stored(entry.get().digest()).compose(cached -> {
                if (cached.isEmpty()) {
                    return fetchTag(route, upstream, key, accepted);
                }
                Instant now = clock.instant();
                boolean fresh = now.isBefore(entry.get().checkedAt().plus(upstream.upstream().manifestTtl()));
                Future<Optional<Manifest>> current = fresh
                        ? Future.succeededFuture(cached)
                        : revalidations.run(key, () -> revalidate(route, upstream, key, entry.get(), cached.get()));
                return current.compose(m -> {
                    if (m.isEmpty()) {
                        return Future.failedFuture(new RegistryError(404, "MANIFEST_UNKNOWN",
                                "manifest " + route.clientName() + ":" + route.tag() + " not found upstream ("
                                        + upstream.name() + ")"));
                    }
                    if (!MediaTypes.allows(accepted, m.get().mediaType())) {
                        metrics.cacheMiss("tag");
                        return fetchInClientTypes(route, upstream, accepted);
                    }
                    if (fresh) {
                        metrics.cacheHit("tag");
                    }
                    return Future.succeededFuture(new Served(m.get(), false));
                });
            });
        });
    }

    private Future<Served> fetchTag(Route route, UpstreamClient upstream, TagKey key, Set<String> accepted) {
        metrics.cacheMiss("tag");
        return fetch(upstream, route, route.tag(), accepted, false, key).compose(m ->
                MediaTypes.allows(accepted, m.mediaType()) ? Future.succeededFuture(new Served(m, true))
                        : fetchInClientTypes(route, upstream, accepted));
    }

    /**
     * The tag's answer is of a type this client does not accept: asks the upstream with the client's
     * own types only, and keeps what comes by digest (the tag keeps its usual answer).
     */
    private Future<Served> fetchInClientTypes(Route route, UpstreamClient upstream, Set<String> accepted) {
        return fetch(upstream, route, route.tag(), accepted, true, null).map(other -> new Served(other, true));
    }

    private TagEntry entryFor(Manifest m) {
        return new TagEntry(m.digest(), m.mediaType(), m.bytes().length, clock.instant());
    }

    /**
     * Asks the upstream whether an expired tag still points where it did. Yields the manifest to
     * serve, or empty when the tag no longer exists upstream.
     */
    private Future<Optional<Manifest>> revalidate(Route route, UpstreamClient upstream, TagKey key, TagEntry entry,
                                                  Manifest cached) {
        String path = "/v2/" + route.repository() + "/manifests/" + route.tag();
        MultiMap headers = MultiMap.caseInsensitiveMultiMap()
                .add(HttpHeaders.ACCEPT, MediaTypes.upstreamAccept(Set.of()));
        return upstream.sendOnce(HttpMethod.HEAD, path, route.repository(), headers, "manifest")
                .compose(resp -> {
                    int status = resp.statusCode();
                    String digestHeader = digestOf(resp);
                    if (status == 200 && entry.digest().toString().equals(digestHeader)) {
                        UpstreamClient.discard(resp);
                        metrics.cacheHit("tag");
                        return onDisk(key, "store tag", () -> tags.put(key, entry.checked(clock.instant())))
                                .map(Optional.of(cached));
                    }
                    if (status == 200 && digestHeader == null) {
                        // The HEAD does not say where the tag points: only a GET can tell.
                        UpstreamClient.discard(resp);
                        if (headsWithoutDigest.add(upstream.name())) {
                            LOG.warn("upstream {}: its manifest HEAD answers carry neither Docker-Content-Digest nor a"
                                    + " digest ETag, so each tag revalidation is a GET (counted against rate limits)",
                                    upstream.name());
                        }
                        return fetch(upstream, route, route.tag(), Set.of(), false, key).map(m -> {
                            if (m.digest().equals(entry.digest())) {
                                metrics.cacheHit("tag");
                            } else {
                                metrics.cacheMiss("tag");
                                LOG.info("upstream {}: tag {}:{} moved to {}", upstream.name(), route.repository(),
                                        route.tag(), m.digest());
                            }
                            return Optional.of(m);
                        });
                    }
                    if (status == 200) {
                        UpstreamClient.discard(resp);
                        metrics.cacheMiss("tag");
                        LOG.info("upstream {}: tag {}:{} moved to {}", upstream.name(), route.repository(),
                                route.tag(), digestHeader);
                        return fetch(upstream, route, route.tag(), Set.of(), false, key).map(Optional::of);
                    }
                    if (status == 404) {
                        UpstreamClient.discard(resp);
                        LOG.info("upstream {}: tag {}:{} no longer exists", upstream.name(), route.repository(),
                                route.tag());
                        return onDisk(key, "remove tag", () -> tags.remove(key)).map(Optional.<Manifest>empty());
                    }
                    return Future.failedFuture(upstream.failure(resp, "MANIFEST_UNKNOWN", "tag " + route.tag()));
                })
                .recover(err -> {
                    RegistryError e = UpstreamClient.transportError(upstream.name(), "upstream", err);
                    if (!e.isUpstreamFailure()) {
                        return Future.failedFuture(e);
                    }
                    metrics.staleServed(upstream.name(), e.staleReason());
                    LOG.warn("upstream {}: serving expired tag {}:{} from cache: {}", upstream.name(),
                            route.repository(), route.tag(), e.getMessage());
                    return Future.succeededFuture(Optional.of(cached));
                });
    }

    /** Work on a tag's file. */
    private interface TagWrite {
        void run() throws java.io.IOException;
    }

    /**
     * Writes what the upstream said of a tag. A disk that cannot take it is a disk error (logged and
     * counted as one), never an upstream failure: the answer stays what the upstream said.
     */
    private Future<Void> onDisk(TagKey key, String what, TagWrite write) {
        return blocking.<Void>run(() -> {
            write.run();
            return null;
        }).recover(err -> {
            String reason = NotEnoughSpaceException.isOutOfSpace(err) ? "disk_full" : "io";
            metrics.storageError(reason);
            LOG.warn("cannot {} {}:{} of upstream {}: {}", what, key.repository(), key.tag(), key.upstream(), err.toString());
            return Future.succeededFuture();
        });
    }

    /**
     * The digest an upstream's manifest answer names: {@code Docker-Content-Digest}, else an
     * {@code ETag} that holds a digest (Distribution sends {@code "sha256:…"}); null when neither does.
     */
    private static String digestOf(HttpClientResponse resp) {
        String header = resp.getHeader("Docker-Content-Digest");
        if (header != null) {
            return header.trim();
        }
        String etag = resp.getHeader(HttpHeaders.ETAG);
        if (etag == null) {
            return null;
        }
        String bare = etag.trim();
        if (bare.startsWith("W/")) {
            bare = bare.substring(2);
        }
        if (bare.length() >= 2 && bare.startsWith("\"") && bare.endsWith("\"")) {
            bare = bare.substring(1, bare.length() - 1);
        }
        return Digest.isValid(bare) ? bare : null;
    }

    /**
     * GETs a manifest upstream (once, however many ask at the same time), verifies and parses it off
     * the event loop, and stores it (with the tag {@code tag} when given), all while its body holds
     * room in the mirror's {@link dev.registrymirror.proxy.upstream.BodyMemory}; yields what to serve.
     */
    private Future<Manifest> fetch(UpstreamClient upstream, Route route, String reference, Set<String> accepted,
                                   boolean clientTypesOnly, TagKey tag) {
        String repository = route.repository();
        String accept = clientTypesOnly && !accepted.isEmpty() ? String.join(", ", accepted)
                : MediaTypes.upstreamAccept(accepted);
        String key = upstream.name() + "/" + repository + "|" + reference + "|" + accept + (tag != null ? "|tag" : "");
        String named = repository + (reference.indexOf(':') >= 0 ? "@" : ":") + reference;
        String name = Provenance.nameOf(route);
        return fetches.run(key, () -> {
            LOG.info("upstream {}: fetching manifest {}", upstream.name(), named);
            MultiMap headers = MultiMap.caseInsensitiveMultiMap().add(HttpHeaders.ACCEPT, accept);
            return Bodies.withRoom(upstream, room -> upstream.send(HttpMethod.GET,
                            "/v2/" + repository + "/manifests/" + reference, repository, headers, "manifest")
                    .compose(resp -> {
                        if (resp.statusCode() != 200) {
                            return Future.failedFuture(upstream.failure(resp, "MANIFEST_UNKNOWN",
                                    "manifest " + named));
                        }
                        String contentType = resp.getHeader(HttpHeaders.CONTENT_TYPE);
                        String announcedDigest = resp.getHeader("Docker-Content-Digest");
                        return Bodies.read(upstream, resp, MAX_MANIFEST_BYTES, "manifest", room, bytes -> blocking
                                .run(() -> parse(upstream, reference, contentType, announcedDigest, bytes))
                                .compose(m -> store(m, name, tag)));
                    }));
        });
    }

    /**
     * The manifest in {@code bytes}, checked against the digest it was asked by (or the one the
     * upstream announced) and read as JSON once, as a stream (a 4 MiB manifest parsed into a tree
     * takes tens of megabytes); fails with a 502 when it is not what it should be. Blocks (hashing).
     */
    private Manifest parse(UpstreamClient upstream, String reference, String contentType, String announcedDigest,
                           byte[] bytes) {
        String wanted = reference.indexOf(':') >= 0 ? reference : announcedDigest;
        Digest expected = wanted != null && Digest.isValid(wanted) ? Digest.parse(wanted) : null;
        Digest actual = Digest.of(expected != null ? expected.algorithm() : "sha256", bytes);
        if (expected != null && !expected.equals(actual)) {
            metrics.upstreamError(upstream.name(), "digest_mismatch");
            LOG.warn("upstream {}: manifest {} does not hash to {}", upstream.name(), reference, expected);
            throw RegistryError.badGateway(upstream.name(), "manifest bytes do not match digest " + expected,
                    "digest_mismatch");
        }
        ManifestJson shape = ManifestJson.read(bytes);
        if (shape == null) {
            metrics.upstreamError(upstream.name(), "protocol");
            LOG.warn("upstream {}: answer for manifest {} is not a manifest ({}, {} bytes)", upstream.name(),
                    reference, contentType, bytes.length);
            throw RegistryError.badGateway(upstream.name(), "answered something that is not a manifest", "protocol");
        }
        return new Manifest(actual, mediaType(contentType, shape.mediaType()), bytes);
    }

    /** The upstream's {@code Content-Type}, unless it is missing or generic: then the body's {@code mediaType}. */
    private static String mediaType(String contentType, String inBody) {
        if (contentType != null && !contentType.isBlank() && !contentType.startsWith("application/json")
                && !contentType.startsWith("text/plain")) {
            return contentType;
        }
        if (inBody != null) {
            return inBody;
        }
        return contentType != null ? contentType : MediaTypes.OCI_MANIFEST;
    }

    private Future<Optional<Manifest>> stored(Digest digest) {
        Optional<Manifest> inMemory = manifests.cached(digest);
        if (inMemory.isPresent()) {
            return Future.succeededFuture(inMemory);
        }
        return blocking.run(() -> manifests.find(digest));
    }

    private Future<Optional<TagEntry>> tagEntry(TagKey key) {
        Optional<TagEntry> inMemory = tags.cached(key);
        if (inMemory.isPresent()) {
            return Future.succeededFuture(inMemory);
        }
        return blocking.run(() -> tags.find(key));
    }

    /**
     * Stores a manifest fetched for {@code name} (recorded as its origin), and when {@code tag} is
     * given, that the tag now points at it; yields the manifest to serve: the one already in memory
     * with that digest, if any, so that all answers of one manifest share one array. When the disk
     * cannot take it, the answer is still served (from memory), and the failure logged and counted.
     */
    private Future<Manifest> store(Manifest m, String name, TagKey tag) {
        TagEntry entry = tag == null ? null : entryFor(m);
        Manifest kept = manifests.cached(m.digest()).orElse(m);
        return blocking.<Manifest>run(() -> {
            manifests.put(kept, provenance.originFor(name));
            if (tag != null) {
                tags.put(tag, entry);
            }
            return kept;
        }).recover(err -> {
            String reason = NotEnoughSpaceException.isOutOfSpace(err) ? "disk_full" : "io";
            metrics.storageError(reason);
            LOG.warn("cannot store manifest {}: {}; served without storing", m.digest(), err.toString());
            return Future.succeededFuture(kept);
        });
    }

    private Future<Void> send(HttpServerRequest req, Served served) {
        Manifest m = served.manifest();
        HttpServerResponse resp = req.response()
                .putHeader(HttpHeaders.CONTENT_TYPE, m.mediaType())
                .putHeader(HttpHeaders.CONTENT_LENGTH, Integer.toString(m.bytes().length))
                .putHeader("Docker-Content-Digest", m.digest().toString())
                .putHeader(HttpHeaders.ETAG, "\"" + m.digest() + "\"");
        if (req.method() == HttpMethod.HEAD) {
            return resp.end();
        }
        if (served.fromUpstream()) {
            metrics.bytesFromUpstream(m.bytes().length);
        } else {
            metrics.bytesFromCache(m.bytes().length);
        }
        return Slices.send(resp, m.bytes());
    }
}
