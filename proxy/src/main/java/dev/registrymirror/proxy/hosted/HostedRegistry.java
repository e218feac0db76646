package dev.registrymirror.proxy.hosted;

import static dev.registrymirror.proxy.hosted.PushAnswers.continueIfExpected;
import static dev.registrymirror.proxy.hosted.PushAnswers.announcedLength;
import static dev.registrymirror.proxy.hosted.PushAnswers.quotaError;

import dev.registrymirror.cache.BlobStore;
import dev.registrymirror.cache.Digest;
import dev.registrymirror.cache.HostedStore;
import dev.registrymirror.config.MirrorConfig;
import dev.registrymirror.metrics.MirrorMetrics;
import dev.registrymirror.proxy.blob.BlobService;
import dev.registrymirror.proxy.manifest.ManifestService;
import dev.registrymirror.proxy.manifest.MediaTypes;
import dev.registrymirror.proxy.manifest.Referrers;
import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.upstream.BodyMemory;
import dev.registrymirror.proxy.vertx.Blocking;
import dev.registrymirror.proxy.vertx.SingleFlight;
import dev.registrymirror.proxy.vertx.Slices;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.Vertx;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.HttpServerRequest;
import io.vertx.core.http.HttpServerResponse;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.time.Clock;
import java.util.List;
import java.util.Optional;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The registry API of hosted repositories: the push side of the OCI distribution spec and the pull
 * side, served from {@link HostedStore} alone, never from an upstream. Uploads and mounts are
 * {@link Uploads}'; manifests (checked by {@link PushedManifest}, within {@code server.bodyMemory}),
 * tags, referrers and deletions are answered here, and garbage collection is started here.
 */
public final class HostedRegistry {
    private static final Logger LOG = LoggerFactory.getLogger(HostedRegistry.class);
    /** The most tags one page lists when the client names no {@code n}. */
    static final int MAX_TAGS_PAGE = 10_000;

    private final Blocking blocking;
    private final HostedStore store;
    private final MirrorConfig.Hosted config;
    private final BodyMemory bodyMemory;
    private final MirrorMetrics metrics;
    private final Uploads uploads;

    /**
     * @param cache       the cache's blobs: a pushed blob the cache holds is stored once, as a link to its file
     * @param maxBlobSize {@code storage.maxBlobSize}, which bounds uploads too
     */
    public HostedRegistry(Vertx vertx, Blocking blocking, HostedStore store, BlobStore cache, MirrorConfig.Hosted config,
                          BodyMemory bodyMemory, Clock clock, long maxBlobSize, MirrorMetrics metrics) {
        this.blocking = blocking;
        this.store = store;
        this.config = config;
        this.bodyMemory = bodyMemory;
        this.metrics = metrics;
        this.uploads = new Uploads(vertx, blocking, store, cache, config, clock, maxBlobSize, metrics);
        metrics.hosted(store::bytes, store::blobCount, store::manifestCount, uploads::open, config.maxSize());
        relist();
    }

    /** Whether the request changes the repository (a push, or a deletion). */
    public static boolean isPush(HttpServerRequest req) {
        return req.method() != HttpMethod.GET && req.method() != HttpMethod.HEAD;
    }

    /**
     * Answers a request for a hosted repository, whose access was checked; {@code mayPull} tells which
     * other repositories the client may read (a mount's source). Fails with a {@link RegistryError}
     * while nothing was sent. The request must be paused until then: its body is read here.
     */
    public Future<Void> serve(HostedRoute r, HttpServerRequest req, java.util.function.Predicate<String> mayPull) {
        HttpMethod m = req.method();
        return switch (r.kind()) {
            case UPLOADS -> m == HttpMethod.POST ? uploads.start(r, req, mayPull) : notAllowed(req, "POST");
            case UPLOAD -> {
                if (m == HttpMethod.PATCH) {
                    yield uploads.patch(r, req);
                } else if (m == HttpMethod.PUT) {
                    yield uploads.finish(r, req);
                } else if (m == HttpMethod.GET) {
                    yield uploads.status(r, req);
                } else if (m == HttpMethod.DELETE) {
                    yield uploads.cancel(r, req);
                }
                yield notAllowed(req, "GET, PATCH, PUT, DELETE");
            }
            case BLOB -> m == HttpMethod.GET || m == HttpMethod.HEAD ? blob(r, req)
                    : m == HttpMethod.DELETE ? delete(r, req) : notAllowed(req, "GET, HEAD, DELETE");
            case MANIFEST -> m == HttpMethod.GET || m == HttpMethod.HEAD ? manifest(r, req)
                    : m == HttpMethod.PUT ? putManifest(r, req)
                    : m == HttpMethod.DELETE ? delete(r, req) : notAllowed(req, "GET, HEAD, PUT, DELETE");
            case TAGS -> m == HttpMethod.GET ? tags(r, req) : notAllowed(req, "GET");
            case REFERRERS -> m == HttpMethod.GET ? referrers(r, req) : notAllowed(req, "GET");
        };
    }

    private static Future<Void> notAllowed(HttpServerRequest req, String allowed) {
        return Future.failedFuture(new RegistryError(405, "UNSUPPORTED", req.method() + " is not supported here ("
                + allowed + ")"));
    }

    /**
     * {@code DELETE} of a tag (the manifest stays, by digest), a manifest (with the repository's tags
     * that point at it) or a blob, from one repository: 202, the files going with the next collection.
     * 405 while {@code hosted.delete} is off.
     */
    private Future<Void> delete(HostedRoute r, HttpServerRequest req) {
        if (!config.delete()) {
            return Future.failedFuture(new RegistryError(405, "UNSUPPORTED", "deletion is off for hosted repositories"
                    + " (hosted.delete: false)"));
        }
        return blocking.run(() -> r.kind() == HostedRoute.Kind.BLOB ? store.deleteBlob(r.name(), r.digest())
                : r.tag() != null ? store.deleteTag(r.name(), r.tag()) : store.deleteManifest(r.name(), r.digest()))
                .compose(deleted -> {
                    if (!deleted) {
                        return Future.failedFuture(r.kind() == HostedRoute.Kind.BLOB
                                ? new RegistryError(404, "BLOB_UNKNOWN", "blob " + r.digest() + " is not in " + r.name())
                                : RegistryError.manifestUnknown(r.reference()));
                    }
                    relist();
                    LOG.info("hosted: {} {} deleted from {}", r.kind() == HostedRoute.Kind.BLOB ? "blob"
                            : r.tag() != null ? "tag" : "manifest", r.reference(), r.name());
                    return req.response().setStatusCode(202).putHeader(HttpHeaders.CONTENT_LENGTH, "0").end();
                });
    }

    /** Runs a garbage collection on a worker thread (one at a time: a second call joins the first). */
    public Future<HostedStore.Collected> collect() {
        synchronized (this) {
            if (collecting != null) {
                return collecting;
            }
            collecting = blocking.run(() -> store.collect(config.gcGrace().toMillis()))
                    .andThen(ar -> {
                        synchronized (this) {
                            collecting = null;
                        }
                        if (ar.failed()) {
                            LOG.warn("hosted: garbage collection failed: {}", ar.cause().getMessage());
                            metrics.hostedCollection(false, 0, 0, 0);
                        } else {
                            HostedStore.Collected c = ar.result();
                            metrics.hostedCollection(true, c.manifests(), c.blobs(), c.bytes());
                            relist();
                        }
                    });
            return collecting;
        }
    }

    private Future<HostedStore.Collected> collecting;

    public HostedStore store() {
        return store;
    }

    /** The hosted repositories as last listed (after each change of manifests), for pages that must not block. */
    public List<HostedStore.Repository> repositories() {
        return listed;
    }

    private volatile List<HostedStore.Repository> listed = List.of();
    private final java.util.concurrent.atomic.AtomicBoolean relisting = new java.util.concurrent.atomic.AtomicBoolean();

    /** Lists the repositories again on a worker thread; changes meanwhile coalesce into one more listing. */
    public void relist() {
        if (relisting.compareAndSet(false, true)) {
            blocking.run(() -> {
                relisting.set(false);
                listed = store.repositories();
                return null;
            }).onFailure(err -> LOG.warn("hosted: cannot list repositories: {}", err.getMessage()));
        }
    }

    /** Drops upload sessions idle for longer than {@code hosted.uploadExpiry}, with their files; yields how many. */
    public int expireUploads() {
        return uploads.expire();
    }

    /** Upload sessions open now. */
    public int openUploads() {
        return uploads.open();
    }

    // ---------------------------------------------------------------- pulls

    private Future<Void> blob(HostedRoute r, HttpServerRequest req) {
        return blocking.run(() -> store.blob(r.name(), r.digest())).compose(found -> {
            if (found.isEmpty()) {
                return Future.failedFuture(new RegistryError(404, "BLOB_UNKNOWN", "blob " + r.digest()
                        + " is not in " + r.name()));
            }
            HostedStore.Item blob = found.get();
            // A GET of a blob not hashed since start hashes it first (once, however many ask): hosted
            // content is the only copy, and a file damaged on the disk must not be sent as the blob.
            Future<Boolean> good = blob.verified() || req.method() == HttpMethod.HEAD ? Future.succeededFuture(true)
                    : verifications.run(blob.digest(), () -> blocking.hash(() -> store.verify(blob)));
            return good.compose(ok -> ok ? BlobService.sendFile(req, blob.digest(), blob.path(), blob.size()).mapEmpty()
                    : Future.failedFuture(new RegistryError(404, "BLOB_UNKNOWN", "blob " + r.digest() + " was damaged"
                    + " on the mirror's disk and is removed; push it again")));
        });
    }

    private final SingleFlight<Digest, Boolean> verifications = new SingleFlight<>();

    private Future<Void> manifest(HostedRoute r, HttpServerRequest req) {
        return blocking.run(() -> {
            Optional<HostedStore.Item> found = r.tag() != null ? store.tagged(r.name(), r.tag())
                    : store.manifest(r.name(), r.digest());
            if (found.isEmpty()) {
                return null;
            }
            return new Read(found.get(), req.method() == HttpMethod.HEAD ? null : store.read(found.get()));
        }).compose(read -> {
            if (read == null) {
                return Future.failedFuture(RegistryError.manifestUnknown(r.reference()));
            }
            HostedStore.Item m = read.item();
            HttpServerResponse resp = ManifestService.manifestHeaders(req.response(), m.mediaType(), m.digest(), m.size());
            return read.bytes() == null ? resp.end() : Slices.send(resp, read.bytes());
        });
    }

    private record Read(HostedStore.Item item, byte[] bytes) {
    }

    private Future<Void> putManifest(HostedRoute r, HttpServerRequest req) {
        long announced = announcedLength(req);
        int max = ManifestService.MAX_MANIFEST_BYTES;
        if (announced > max) {
            return Future.failedFuture(new RegistryError(413, "SIZE_INVALID", "the manifest has " + announced
                    + " bytes, over the limit of " + max));
        }
        String contentType = req.getHeader(HttpHeaders.CONTENT_TYPE);
        return bodyMemory.reserve(announced >= 0 ? announced : max).compose(lease ->
                readManifest(req, max).compose(bytes -> blocking.<Stored>run(() -> {
                    PushedManifest parsed = PushedManifest.read(bytes, contentType);
                    Digest digest = Digest.of(r.digest() != null ? r.digest().algorithm() : "sha256", bytes);
                    if (r.digest() != null && !r.digest().equals(digest)) {
                        throw new RegistryError(400, "DIGEST_INVALID", "the manifest hashes to " + digest + ", not "
                                + r.digest());
                    }
                    store.putManifest(r.name(), r.tag(), digest, parsed.mediaType(), bytes, parsed.references());
                    return new Stored(digest, parsed.references().subject(), bytes.length);
                })).andThen(ar -> lease.release())
        ).recover(err -> {
            if (err instanceof HostedStore.QuotaExceeded q) {
                metrics.hostedRefused("quota");
                LOG.warn("hosted: manifest refused for {}: {}", r.name(), q.getMessage());
                return Future.failedFuture(quotaError(q));
            }
            if (err instanceof HostedStore.MissingReference m) {
                metrics.hostedRefused("invalid");
                return Future.failedFuture(new RegistryError(400, m.blob ? "MANIFEST_BLOB_UNKNOWN" : "MANIFEST_INVALID",
                        "manifest names " + m.getMessage() + " " + r.name()));
            }
            if (err instanceof RegistryError e && e.status == 400) {
                metrics.hostedRefused("invalid");
            }
            return Future.failedFuture(err);
        }).compose(stored -> {
            metrics.hostedPushed("manifest", stored.size());
            relist();
            LOG.info("hosted: manifest {} pushed to {}{}", stored.digest(), r.name(),
                    r.tag() != null ? " as " + r.tag() : "");
            HttpServerResponse resp = req.response().setStatusCode(201)
                    .putHeader("Location", "/v2/" + r.name() + "/manifests/" + stored.digest())
                    .putHeader("Docker-Content-Digest", stored.digest().toString())
                    .putHeader(HttpHeaders.CONTENT_LENGTH, "0");
            if (stored.subject() != null) {
                resp.putHeader("OCI-Subject", stored.subject().toString());
            }
            return resp.end();
        });
    }

    private record Stored(Digest digest, Digest subject, long size) {
    }

    /** The request's body, at most {@code max} bytes (a 413 past that). */
    private static Future<byte[]> readManifest(HttpServerRequest req, int max) {
        continueIfExpected(req);
        Promise<byte[]> done = Promise.promise();
        Buffer body = Buffer.buffer();
        req.handler(b -> {
            if (body.length() + b.length() > max) {
                done.tryFail(new RegistryError(413, "SIZE_INVALID", "the manifest has more than " + max + " bytes"));
                return;
            }
            if (!done.future().isComplete()) {
                body.appendBuffer(b);
            }
        });
        req.endHandler(v -> done.tryComplete(body.getBytes()));
        req.exceptionHandler(done::tryFail);
        req.resume();
        return done.future();
    }

    private Future<Void> tags(HostedRoute r, HttpServerRequest req) {
        String nText = req.getParam("n");
        String last = req.getParam("last");
        int n;
        try {
            n = nText == null ? MAX_TAGS_PAGE : Math.min(MAX_TAGS_PAGE, Integer.parseInt(nText));
            if (n < 0) {
                throw new NumberFormatException();
            }
        } catch (NumberFormatException e) {
            return Future.failedFuture(new RegistryError(400, "PAGINATION_NUMBER_INVALID", "n=" + nText
                    + " is not a number of tags"));
        }
        return blocking.run(() -> {
            List<String> tags = store.tags(r.name(), last, n);
            return tags.isEmpty() && last == null && !store.repositoryExists(r.name()) ? null : tags;
        }).compose(tags -> {
            if (tags == null) {
                return Future.failedFuture(new RegistryError(404, "NAME_UNKNOWN", "repository " + r.name()
                        + " is not known here"));
            }
            HttpServerResponse resp = req.response().putHeader(HttpHeaders.CONTENT_TYPE, "application/json");
            List<String> page = tags.size() > n ? tags.subList(0, n) : tags;
            if (tags.size() > n && n > 0) {
                resp.putHeader("Link", "</v2/" + r.name() + "/tags/list?n=" + n + "&last="
                        + page.get(page.size() - 1) + ">; rel=\"next\"");
            }
            return resp.end(new JsonObject().put("name", r.name()).put("tags", new JsonArray(page)).toBuffer());
        });
    }

    private Future<Void> referrers(HostedRoute r, HttpServerRequest req) {
        String artifactType = req.getParam("artifactType");
        return blocking.run(() -> store.referrers(r.name(), r.digest(), artifactType)).compose(list -> {
            JsonArray manifests = new JsonArray();
            for (HostedStore.Referrer ref : list) {
                JsonObject d = new JsonObject().put("mediaType", ref.mediaType()).put("digest", ref.digest().toString())
                        .put("size", ref.size());
                if (ref.artifactType() != null) {
                    d.put("artifactType", ref.artifactType());
                }
                if (ref.annotations() != null) {
                    d.put("annotations", new JsonObject(ref.annotations()));
                }
                manifests.add(d);
            }
            HttpServerResponse resp = req.response().putHeader(HttpHeaders.CONTENT_TYPE, MediaTypes.OCI_INDEX);
            if (artifactType != null) {
                resp.putHeader("OCI-Filters-Applied", "artifactType");
            }
            return resp.end(Referrers.index(manifests).toBuffer());
        });
    }
}
