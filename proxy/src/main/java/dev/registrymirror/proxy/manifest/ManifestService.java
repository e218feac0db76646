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
import dev.registrymirror.proxy.cluster.Cluster;
import dev.registrymirror.proxy.upstream.Sender;
import java.net.URI;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
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
    /**
     * On a tag's answer to another replica: when the upstream last confirmed the tag (Unix
     * milliseconds), so that the asking replica keeps it only for the rest of the TTL.
     */
    static final String TAG_CHECKED_HEADER = "X-Registry-Mirror-Tag-Checked";

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
    /** The replicas this one forms one cache with; null when it runs alone. */
    private final Cluster cluster;

    /** @param cluster the replicas this one forms one cache with (owners of tags and manifests); null alone */
    public ManifestService(Blocking blocking, ManifestStore manifests, TagStore tags, MirrorMetrics metrics, Clock clock,
                           Provenance provenance, Cluster cluster) {
        this.provenance = provenance;
        this.cluster = cluster;
        this.blocking = blocking;
        this.manifests = manifests;
        this.tags = tags;
        this.metrics = metrics;
        this.clock = clock;
    }

    public Future<Void> serve(Route route, UpstreamClient upstream, HttpServerRequest req) {
        return serve(route, upstream, req, false);
    }

    /**
     * @param hop another replica asks, as the owner of the tag or digest: answered here (down to the
     *            upstream), never forwarded again; a tag's answer says when it was last checked
     */
    public Future<Void> serve(Route route, UpstreamClient upstream, HttpServerRequest req, boolean hop) {
        Set<String> accepted = MediaTypes.accepted(req.headers().getAll(HttpHeaders.ACCEPT));
        Future<Served> answer = route.digest() != null
                ? byDigest(route, upstream, route.digest(), accepted, hop)
                : byTag(route, upstream, accepted, hop);
        return answer.compose(served -> {
            if (!MediaTypes.allows(accepted, served.manifest().mediaType())) {
                return Future.failedFuture(new RegistryError(404, "MANIFEST_UNKNOWN", "manifest "
                        + route.clientName() + (route.tag() != null ? ":" : "@") + route.reference() + " is " + served.manifest().mediaType()
                        + ", which the Accept header does not allow"));
            }
            return send(req, served, hop);
        });
    }

    /**
     * A manifest and whether it came from the upstream just now; for a tag, when the upstream last
     * confirmed it (else null).
     */
    private record Served(Manifest manifest, boolean fromUpstream, Instant checkedAt) {
        Served(Manifest manifest, boolean fromUpstream) {
            this(manifest, fromUpstream, null);
        }
    }

    /**
     * By digest: the store first (served under the request's name only as {@link Provenance} allows,
     * decided with the manifest in hand), else the upstream under that name.
     */
    private Future<Served> byDigest(Route route, UpstreamClient upstream, Digest digest, Set<String> accepted,
                                    boolean hop) {
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
            return fetch(upstream, route, digest.toString(), accepted, false, null, hop).map(m -> new Served(m, true));
        });
    }

    private Future<Served> byTag(Route route, UpstreamClient upstream, Set<String> accepted, boolean hop) {
        TagKey key = new TagKey(upstream.name(), route.repository(), route.tag());
        return tagEntry(key).compose(entry -> {
            if (entry.isEmpty()) {
                return fetchTag(route, upstream, key, accepted, hop);
            }
            return stored(entry.get().digest()).compose(cached -> {
                if (cached.isEmpty()) {
                    return fetchTag(route, upstream, key, accepted, hop);
                }
                Instant now = clock.instant();
                boolean fresh = now.isBefore(entry.get().checkedAt().plus(upstream.upstream().manifestTtl()));
                Future<Optional<Manifest>> current = fresh
                        ? Future.succeededFuture(cached)
                        : revalidations.run(key, () -> revalidate(route, upstream, key, entry.get(), cached.get(), hop));
                return current.compose(m -> {
                    if (m.isEmpty()) {
                        return Future.failedFuture(new RegistryError(404, "MANIFEST_UNKNOWN",
                                "manifest " + route.clientName() + ":" + route.tag() + " not found upstream ("
                                        + upstream.name() + ")"));
                    }
                    if (!MediaTypes.allows(accepted, m.get().mediaType())) {
                        metrics.cacheMiss("tag");
                        return fetchInClientTypes(route, upstream, accepted, hop);
                    }
                    if (fresh) {
                        metrics.cacheHit("tag");
                    }
                    Instant checked = fresh ? entry.get().checkedAt()
                            : tags.cached(key).map(TagEntry::checkedAt).orElse(entry.get().checkedAt());
                    return Future.succeededFuture(new Served(m.get(), false, checked));
                });
            });
        });
    }

    private Future<Served> fetchTag(Route route, UpstreamClient upstream, TagKey key, Set<String> accepted,
                                    boolean hop) {
        metrics.cacheMiss("tag");
        return fetch(upstream, route, route.tag(), accepted, false, key, hop).compose(m ->
                MediaTypes.allows(accepted, m.mediaType())
                        ? Future.succeededFuture(new Served(m, true, tags.cached(key).map(TagEntry::checkedAt)
                        .orElse(clock.instant())))
                        : fetchInClientTypes(route, upstream, accepted, hop));
    }

    /**
     * The tag's answer is of a type this client does not accept: asks the upstream with the client's
     * own types only, and keeps what comes by digest (the tag keeps its usual answer).
     */
    private Future<Served> fetchInClientTypes(Route route, UpstreamClient upstream, Set<String> accepted,
                                              boolean hop) {
        return fetch(upstream, route, route.tag(), accepted, true, null, hop).map(other -> new Served(other, true));
    }

    private static TagEntry entryFor(Manifest m, Instant checkedAt) {
        return new TagEntry(m.digest(), m.mediaType(), m.bytes().length, checkedAt);
    }

    /**
     * Asks the upstream whether an expired tag still points where it did. Yields the manifest to
     * serve, or empty when the tag no longer exists upstream.
     */
    private Future<Optional<Manifest>> revalidate(Route route, UpstreamClient upstream, TagKey key, TagEntry entry,
                                                  Manifest cached, boolean hop) {
        String path = "/v2/" + route.repository() + "/manifests/" + route.tag();
        MultiMap headers = MultiMap.caseInsensitiveMultiMap()
                .add(HttpHeaders.ACCEPT, MediaTypes.upstreamAccept(Set.of()));
        return ask(owner(hop, upstream, route.repository(), route.tag()), upstream, HttpMethod.HEAD, path,
                route.repository(), headers, true)
                .compose(answer -> {
                    HttpClientResponse resp = answer.resp();
                    int status = resp.statusCode();
                    String digestHeader = digestOf(resp);
                    if (status == 200 && entry.digest().toString().equals(digestHeader)) {
                        UpstreamClient.discard(resp);
                        metrics.cacheHit("tag");
                        Instant checked = answer.checkedAt(clock);
                        return onDisk(key, "store tag", () -> tags.put(key, entry.checked(checked)))
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
                        return fetch(upstream, route, route.tag(), Set.of(), false, key, hop).map(m -> {
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
                        return fetch(upstream, route, route.tag(), Set.of(), false, key, hop).map(Optional::of);
                    }
                    if (status == 404) {
                        UpstreamClient.discard(resp);
                        LOG.info("upstream {}: tag {}:{} no longer exists", upstream.name(), route.repository(),
                                route.tag());
                        return onDisk(key, "remove tag", () -> tags.remove(key)).map(Optional.<Manifest>empty());
                    }
                    return answer.failure(upstream, "MANIFEST_UNKNOWN", "tag " + route.tag());
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
                                   boolean clientTypesOnly, TagKey tag, boolean hop) {
        String repository = route.repository();
        String accept = clientTypesOnly && !accepted.isEmpty() ? String.join(", ", accepted)
                : MediaTypes.upstreamAccept(accepted);
        String key = upstream.name() + "/" + repository + "|" + reference + "|" + accept + (tag != null ? "|tag" : "");
        String named = repository + (reference.indexOf(':') >= 0 ? "@" : ":") + reference;
        String name = Provenance.nameOf(route);
        URI owner = owner(hop, upstream, repository, reference);
        return fetches.run(key, () -> {
            if (owner == null) {
                LOG.info("upstream {}: fetching manifest {}", upstream.name(), named);
            }
            MultiMap headers = MultiMap.caseInsensitiveMultiMap().add(HttpHeaders.ACCEPT, accept);
            return Bodies.withRoom(upstream, room -> ask(owner, upstream, HttpMethod.GET,
                            "/v2/" + repository + "/manifests/" + reference, repository, headers, false)
                    .compose(answer -> {
                        HttpClientResponse resp = answer.resp();
                        if (resp.statusCode() != 200) {
                            return answer.<Manifest>failure(upstream, "MANIFEST_UNKNOWN", "manifest " + named);
                        }
                        String contentType = resp.getHeader(HttpHeaders.CONTENT_TYPE);
                        String announcedDigest = resp.getHeader("Docker-Content-Digest");
                        Instant checked = answer.checkedAt(clock);
                        return Bodies.read(answer.sender(), resp, MAX_MANIFEST_BYTES, "manifest", room, bytes -> blocking
                                .run(() -> parse(upstream, reference, contentType, announcedDigest, bytes))
                                .compose(m -> store(m, name, tag, checked)));
                    }));
        });
    }

    /**
     * The replica that owns what {@code reference} names (a tag, or a manifest digest), when it is
     * another: a request for it goes there instead of the upstream (its answer is kept here too: a
     * manifest is small and, by digest, never changes). Null when this replica asks the upstream
     * itself: it runs alone, owns it, or answers a hop (never forwarded again).
     */
    private URI owner(boolean hop, UpstreamClient upstream, String repository, String reference) {
        if (cluster == null || hop) {
            return null;
        }
        URI owner = reference.indexOf(':') >= 0 && Digest.isValid(reference)
                ? cluster.owners(ContentKind.MANIFEST, Digest.parse(reference)).get(0)
                : cluster.tagOwner(upstream.name(), repository, reference);
        return owner.equals(cluster.self()) ? null : owner;
    }

    /** An answer to a manifest request, and who sent it: the upstream, or the replica that owns it. */
    private record Answer(HttpClientResponse resp, Sender sender, URI replica, Cluster cluster) {
        /** When the upstream last confirmed the tag: the owner says; now, for the upstream's own answer. */
        Instant checkedAt(Clock clock) {
            String header = replica == null ? null : resp.getHeader(TAG_CHECKED_HEADER);
            if (header != null) {
                try {
                    Instant said = Instant.ofEpochMilli(Long.parseLong(header));
                    return said.isAfter(clock.instant()) ? clock.instant() : said;
                } catch (NumberFormatException e) {
                    // a replica of another version: now
                }
            }
            return clock.instant();
        }

        /** The answer, not a 200, as the error to fail with. */
        <T> Future<T> failure(UpstreamClient upstream, String notFoundCode, String what) {
            if (replica == null) {
                return Future.failedFuture(upstream.failure(resp, notFoundCode, what));
            }
            return cluster.error(replica, resp).compose(Future::failedFuture);
        }
    }

    /**
     * Sends a manifest request to {@code owner} over the hop, or to the upstream when {@code owner} is
     * null or cannot be reached (this replica's view of the members is behind).
     */
    private Future<Answer> ask(URI owner, UpstreamClient upstream, HttpMethod method, String path, String repository,
                               MultiMap headers, boolean once) {
        if (owner == null) {
            return (once ? upstream.sendOnce(method, path, repository, headers, "manifest")
                    : upstream.send(method, path, repository, headers, "manifest"))
                    .map(resp -> new Answer(resp, upstream, null, null));
        }
        String uri = path + "?ns=" + URLEncoder.encode(upstream.name(), StandardCharsets.UTF_8);
        return cluster.send(owner, method, uri, headers).transform(ar -> {
            if (ar.succeeded()) {
                return Future.succeededFuture(new Answer(ar.result(), cluster.sender(owner), owner, cluster));
            }
            cluster.unreachable(owner, ar.cause(), "its tags and manifests are asked of the upstreams meanwhile");
            return ask(null, upstream, method, path, repository, headers, once);
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
    private Future<Manifest> store(Manifest m, String name, TagKey tag, Instant checkedAt) {
        TagEntry entry = tag == null ? null : entryFor(m, checkedAt);
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

    /** The headers of every manifest answer: its own type, length and digest (also as the ETag). */
    public static HttpServerResponse manifestHeaders(HttpServerResponse resp, String mediaType, Digest digest, long size) {
        return resp.putHeader(HttpHeaders.CONTENT_TYPE, mediaType)
                .putHeader(HttpHeaders.CONTENT_LENGTH, Long.toString(size))
                .putHeader("Docker-Content-Digest", digest.toString())
                .putHeader(HttpHeaders.ETAG, "\"" + digest + "\"");
    }

    private Future<Void> send(HttpServerRequest req, Served served, boolean hop) {
        Manifest m = served.manifest();
        HttpServerResponse resp = manifestHeaders(req.response(), m.mediaType(), m.digest(), m.bytes().length);
        if (hop && served.checkedAt() != null) {
            resp.putHeader(TAG_CHECKED_HEADER, Long.toString(served.checkedAt().toEpochMilli()));
        }
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
