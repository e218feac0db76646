package dev.registrymirror.proxy;

import dev.registrymirror.cache.ContentKind;
import dev.registrymirror.proxy.access.Provenance;
import dev.registrymirror.proxy.cluster.Cluster;
import dev.registrymirror.proxy.operator.AdminApi;
import dev.registrymirror.proxy.operator.OperatorRoutes;
import dev.registrymirror.proxy.operator.Prefetcher;
import dev.registrymirror.proxy.operator.StatusPage;
import dev.registrymirror.proxy.upstream.BodyMemory;
import dev.registrymirror.proxy.upstream.UpstreamBudget;
import dev.registrymirror.proxy.vertx.Owner;
import dev.registrymirror.proxy.upstream.UpstreamClient;
import dev.registrymirror.proxy.blob.BlobService;
import dev.registrymirror.proxy.blob.InflightDownloads;
import dev.registrymirror.proxy.manifest.ManifestService;
import dev.registrymirror.proxy.manifest.Referrers;
import dev.registrymirror.proxy.manifest.TagLists;
import dev.registrymirror.proxy.http.ConnectionGuard;
import dev.registrymirror.proxy.http.RegistryHandler;
import dev.registrymirror.proxy.vertx.Blocking;
import dev.registrymirror.proxy.vertx.Fatal;

import dev.registrymirror.cache.BlobStore;
import dev.registrymirror.cache.ManifestStore;
import dev.registrymirror.cache.Storage;
import dev.registrymirror.cache.TagStore;
import dev.registrymirror.config.MirrorConfig;
import dev.registrymirror.metrics.MirrorMetrics;
import io.netty.buffer.ByteBufAllocator;
import io.vertx.core.AbstractVerticle;
import io.vertx.core.DeploymentOptions;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.Vertx;
import io.vertx.core.VertxOptions;
import io.vertx.core.http.HttpServerOptions;
import java.io.IOException;
import java.time.Clock;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.UnaryOperator;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A running mirror: stores opened, upstream clients made, the HTTP server listening on one event
 * loop per core. Start-up asks no upstream.
 */
public final class Mirror {
    private static final Logger LOG = LoggerFactory.getLogger(Mirror.class);
    /** This version, as {@code --version}, the status page, the log and the User-Agent say: the pom's. */
    public static final String VERSION = readVersion();

    /** The version the build wrote into {@code registry-mirror.properties} (resource filtering). */
    private static String readVersion() {
        try (java.io.InputStream in = Mirror.class.getResourceAsStream("/registry-mirror.properties")) {
            java.util.Properties p = new java.util.Properties();
            if (in != null) {
                p.load(in);
            }
            String v = p.getProperty("version", "");
            return v.isEmpty() || v.startsWith("${") ? "unknown" : v;
        } catch (IOException e) {
            return "unknown";
        }
    }
    /** Manifests kept in memory: an eighth of the heap, at most 64 MiB. */
    static final long MANIFEST_MEMORY_BYTES = Math.min(64L << 20, Runtime.getRuntime().maxMemory() / 8);
    static final int TAG_MEMORY_ENTRIES = 100_000;
    /** Threads that hash stored blobs on their first read after a start (CPU-bound work). */
    static final int HASHING_THREADS = Math.max(2, Runtime.getRuntime().availableProcessors());

    private final Vertx vertx;
    private final MirrorMetrics metrics;
    private final InflightDownloads downloads;
    private final Map<String, UpstreamClient> upstreams;
    private final RegistryHandler handler;
    private final MirrorConfig config;
    private final Storage storage;
    /** Hosted repositories' content; null without {@code hosted}. */
    private final dev.registrymirror.cache.HostedStore hostedStore;
    private final dev.registrymirror.proxy.hosted.HostedRegistry hosted;
    private final Blocking blocking;
    private final ConnectionGuard connections;
    private final Clock clock;
    private String deployment;
    private volatile int port;
    private volatile Prefetcher prefetcher;
    /** The replicas this one forms one cache with; null when it runs alone. */
    private final Cluster cluster;
    /** {@code access:}, when it restricts anything; null otherwise. */
    private final dev.registrymirror.proxy.access.AccessControl access;
    /** HTTPS, when {@code server.tls} is set; null otherwise. */
    private final dev.registrymirror.proxy.http.ServerTls tls;
    private long tlsTimer = -1;
    private long uploadTimer = -1;
    private long hostedMinutes;
    /** How often hosted repositories are garbage-collected, online. */
    static final int GC_EVERY_MINUTES = 15;
    /**
     * A plain-HTTP listener on loopback for the mirror's own requests (prefetch), which cannot present
     * a client certificate to the TLS listener: it answers only requests carrying {@link #internalSecret}.
     */
    private io.vertx.core.http.HttpServer internal;
    private String internalDeployment;
    private final String internalSecret = newSecret();
    /** The header that carries {@link #internalSecret}. */
    static final String INTERNAL_HEADER = "X-Registry-Mirror-Internal";

    private static String newSecret() {
        byte[] b = new byte[32];
        new java.security.SecureRandom().nextBytes(b);
        return java.util.HexFormat.of().formatHex(b);
    }

    private Mirror(Vertx vertx, MirrorConfig config, Clock clock, UnaryOperator<BlobStore> blobStoreWrapper,
                   ByteBufAllocator allocator) throws IOException {
        this.vertx = vertx;
        this.clock = clock;
        this.metrics = MirrorMetrics.create();
        metrics.startAtZero(config.upstreams().stream().map(MirrorConfig.Upstream::name).toList());
        MirrorConfig.Storage sc = config.storage();
        this.storage = Storage.open(sc.path(), new Storage.Limits(sc.maxSize(), sc.lowWatermark(), sc.maxAge(), sc.minFree()),
                clock, new StorageMetrics(metrics), MANIFEST_MEMORY_BYTES, TAG_MEMORY_ENTRIES);
        // Hosted content beside the cache, sharing blob files with it (one copy of a layer that is both).
        this.hostedStore = config.hosted() == null ? null
                : dev.registrymirror.cache.HostedStore.open(sc.path().resolve("hosted"), clock, config.hosted().maxSize());
        BlobStore blobStore = blobStoreWrapper.apply(hostedStore == null ? storage.blobs()
                : hostedStore.sharedWith(storage.blobs()));
        ManifestStore manifestStore = storage.manifests();
        TagStore tagStore = storage.tags();
        metrics.storedBytes("blob", blobStore::storedBytes);
        metrics.storedBytes("manifest", manifestStore::storedBytes);
        metrics.storedItems("blob", () -> storage.storedCount(ContentKind.BLOB));
        metrics.storedItems("manifest", () -> storage.storedCount(ContentKind.MANIFEST));
        if (sc.maxSize() > 0) {
            metrics.storageLimit(sc.maxSize());
        }
        metrics.storageFreeSpace(storage::lastFreeSpace, sc.minFree());
        metrics.storageIndexReady(() -> storage.indexed().isDone());
        this.upstreams = new LinkedHashMap<>();
        BodyMemory bodyMemory = new BodyMemory(vertx, BodyMemory.limitFor(config.server().bodyMemory()));
        metrics.bodyMemory(bodyMemory::used, bodyMemory.limit());
        for (MirrorConfig.Upstream u : config.upstreams()) {
            upstreams.put(u.name(), new UpstreamClient(vertx, u, metrics, clock, bodyMemory,
                    "registry-mirror/" + VERSION));
        }
        this.blocking = new Blocking(vertx, HASHING_THREADS);
        Provenance provenance = Provenance.of(config.access(), storage, blocking);
        this.cluster = config.cluster() == null ? null : new Cluster(vertx, config.cluster(), clock, metrics);
        this.downloads = new InflightDownloads(vertx, blocking, blobStore, metrics, config.server().downloadMemory(),
                allocator, sc.maxBlobSize(), sc.minFree(), provenance, cluster);
        BlobService blobs = new BlobService(vertx, blocking, blobStore, downloads, metrics, provenance);
        ManifestService manifests = new ManifestService(blocking, manifestStore, tagStore, metrics, clock, provenance, cluster);
        this.connections = new ConnectionGuard(config.server(), clock, metrics);
        this.access = config.access().restricts()
                ? new dev.registrymirror.proxy.access.AccessControl(vertx, config.access(), clock, metrics) : null;
        this.hosted = hostedStore == null ? null : new dev.registrymirror.proxy.hosted.HostedRegistry(vertx, blocking,
                hostedStore, blobStore, config.hosted(), bodyMemory, clock, sc.maxBlobSize(), metrics);
        this.handler = new RegistryHandler(vertx, config, Map.copyOf(upstreams), blobs, manifests,
                new TagLists(metrics), new Referrers(), metrics, connections, access, cluster, hosted);
        this.config = config;
        this.tls = config.server().tls() == null ? null : new dev.registrymirror.proxy.http.ServerTls(vertx, config.server().tls());
        AdminApi admin = new AdminApi(config, storage, blocking, () -> prefetcher, cluster, hosted);
        StatusPage status = new StatusPage(VERSION, config, metrics, Map.copyOf(upstreams), downloads, storage,
                () -> blobStore.storedBytes() + manifestStore.storedBytes(), handler.pulls(), () -> prefetcher, clock, cluster, hosted);
        handler.routes((router, guard) -> OperatorRoutes.mount(router, guard, admin, status));
        handler.removalsFromReplicas(admin::removalFromReplica);
    }

    /**
     * Each mirror listening on "any free port" shares one such port between its event loops: Vert.x
     * gives servers on port 0 a port each, and shares a random port only between servers given the
     * same negative number.
     */
    private static final AtomicInteger RANDOM_PORT_GROUPS = new AtomicInteger();

    /** A Vert.x instance set up for a mirror of this configuration (native transport where available). */
    public static Vertx newVertx(MirrorConfig config) {
        VertxOptions options = new VertxOptions().setPreferNativeTransport(true);
        options.setEventLoopPoolSize(Math.max(options.getEventLoopPoolSize(), config.server().eventLoops()));
        return newVertx(options);
    }

    /**
     * A Vert.x instance with {@code options} that a mirror can run on: made after the mirror's
     * context locals are registered (Vert.x sizes them when an instance is made).
     */
    public static Vertx newVertx(VertxOptions options) {
        UpstreamBudget.checkRegistered(null);
        return Vertx.vertx(options);
    }

    /** Starts a mirror on {@code vertx}, with the given clock (tests advance it). */
    public static Future<Mirror> start(Vertx vertx, MirrorConfig config, Clock clock) {
        return start(vertx, config, clock, UnaryOperator.identity());
    }

    /** Like {@link #start(Vertx, MirrorConfig, Clock)}, with the blob store wrapped (tests inject disk faults). */
    static Future<Mirror> start(Vertx vertx, MirrorConfig config, Clock clock,
                                UnaryOperator<BlobStore> blobStoreWrapper) {
        return start(vertx, config, clock, blobStoreWrapper, ByteBufAllocator.DEFAULT);
    }

    /** Like {@link #start(Vertx, MirrorConfig, Clock, UnaryOperator)}, with the allocator of download chunks (tests make it run out). */
    static Future<Mirror> start(Vertx vertx, MirrorConfig config, Clock clock,
                                UnaryOperator<BlobStore> blobStoreWrapper, ByteBufAllocator allocator) {
        // An Error on an event loop ends the process (see Fatal); other failures there are logged.
        vertx.exceptionHandler(err -> {
            if (!Fatal.check("an event loop", err)) {
                LOG.error("unhandled failure on an event loop", err);
            }
        });
        try {
            UpstreamBudget.checkRegistered(vertx);
        } catch (IllegalStateException e) {
            return Future.failedFuture(e);
        }
        return vertx.executeBlocking(() -> new Mirror(vertx, config, clock, blobStoreWrapper, allocator))
                .compose(Mirror::listen);
    }

    private Future<Mirror> listen() {
        int instances = config.server().eventLoops();
        int configured = config.server().port();
        HttpServerOptions options = new HttpServerOptions()
                .setHost(config.server().host())
                .setPort(configured != 0 ? configured : -1 - RANDOM_PORT_GROUPS.getAndIncrement() % 10_000)
                .setCompressionSupported(false)
                // HTTP/1.1 only: registry clients do not speak HTTP/2 without TLS, and one request per
                // connection at a time is what the shutdown's count of responses in progress relies on.
                .setHttp2ClearTextEnabled(false)
                .setTcpNoDelay(true)
                .setMaxInitialLineLength(8192)
                .setMaxHeaderSize(16384);
        if (tls != null) {
            tls.apply(options);
        }
        return vertx.deployVerticle(() -> new AbstractVerticle() {
                    @Override
                    public void start(Promise<Void> started) {
                        Owner.anchor(context); // downloads started by its requests live on this context
                        io.vertx.core.http.HttpServer server = vertx.createHttpServer(options);
                        server.connectionHandler(connections::opened).requestHandler(handler)
                                .invalidRequestHandler(RegistryHandler::invalidRequest).listen()
                                .onSuccess(s -> {
                                    port = s.actualPort();
                                    if (tls != null) {
                                        tls.serving(s);
                                    }
                                    started.complete();
                                })
                                .onFailure(started::fail);
                    }
                }, new DeploymentOptions().setInstances(instances))
                .recover(err -> Future.failedFuture(err instanceof java.net.BindException
                        ? new dev.registrymirror.config.ConfigException("server.port: " + configured + " on "
                        + config.server().host() + " is already in use by another process; stop it, or choose"
                        + " another port (server.port, --port)", err)
                        : err))
                .compose(id -> {
                    deployment = id;
                    return listenInternal();
                })
                .map(internalPort -> {
                    connections.start(vertx);
                    if (hosted != null) {
                        uploadTimer = vertx.setPeriodic(60_000, t -> {
                            hosted.expireUploads();
                            if (++hostedMinutes % GC_EVERY_MINUTES == 0) {
                                hosted.collect();
                            }
                        });
                        LOG.info("hosted repositories: {} (pushes need access.rules[].push), {} stored, quota {}",
                                String.join(", ", config.hosted().repositories()), hostedStore.bytes() + " bytes",
                                config.hosted().maxSize() > 0 ? config.hosted().maxSize() + " bytes" : "none");
                    }
                    if (tls != null) {
                        tlsTimer = vertx.setPeriodic(dev.registrymirror.proxy.http.ServerTls.CHECK_MILLIS,
                                t -> tls.reloadIfChanged(vertx));
                    }
                    LOG.info("registry mirror {} listening on {}://{}:{} ({} event loops, at most {} client connections,"
                                    + " {} per address, heap {} MiB), storage {}, upstreams {}", VERSION,
                            tls == null ? "http" : "https", config.server().host(), port, instances,
                            connections.maxConnections(), config.server().maxConnectionsPerClient(),
                            Runtime.getRuntime().maxMemory() >> 20,
                            config.storage().path().toAbsolutePath().normalize(),
                            String.join(", ", config.upstreams().stream()
                                    .map(u -> u.name() + "=" + u.url()).toList()));
                    if (tls != null) {
                        LOG.info("TLS: serving {}{}", dev.registrymirror.proxy.http.ServerTls.describe(tls.certificate()),
                                config.server().tls().clientCaFile() != null
                                        ? "; client certificates signed by " + config.server().tls().clientCaFile()
                                        + " required" : "");
                    }
                    if (access != null) {
                        access.start();
                        LOG.info("access: {}{}{}{}", access.userCount() >= 0 ? access.userCount() + " users in "
                                        + config.access().users() : "no users",
                                config.access().networks().isEmpty() ? "" : ", clients from " + config.access().networks(),
                                config.access().rules().isEmpty() ? ", no rules (everyone pulls everything)"
                                        : ", " + config.access().rules().size() + " rules",
                                config.access().requestsPerSecond() > 0 ? ", at most "
                                        + config.access().requestsPerSecond() + " requests/s per client" : "");
                    }
                    storage.start(); // the reconciliation, if any, once the server answers
                    if (cluster != null) {
                        // In the background: until it has joined, this replica serves alone.
                        cluster.start().onFailure(err -> LOG.error("cluster {}: cannot join ({}); serving alone",
                                config.cluster().name(), err.toString()));
                    }
                    prefetcher = new Prefetcher(vertx, "127.0.0.1", internalPort, INTERNAL_HEADER, internalSecret,
                            config.prefetch(), clock, metrics);
                    prefetcher.start(); // in the background: start-up does not wait for it
                    return this;
                });
    }

    /** The loopback listener for the mirror's own requests; yields its port. */
    private Future<Integer> listenInternal() {
        byte[] secret = internalSecret.getBytes(java.nio.charset.StandardCharsets.US_ASCII);
        return vertx.deployVerticle(new AbstractVerticle() {
            @Override
            public void start(Promise<Void> started) {
                Owner.anchor(context);
                internal = vertx.createHttpServer(new HttpServerOptions().setHost("127.0.0.1").setPort(0)
                        .setCompressionSupported(false).setTcpNoDelay(true));
                internal.connectionHandler(connections::opened).requestHandler(req -> {
                    String given = req.getHeader(INTERNAL_HEADER);
                    if (given != null && java.security.MessageDigest.isEqual(
                            given.getBytes(java.nio.charset.StandardCharsets.US_ASCII), secret)) {
                        handler.handleInternal(req);
                    } else {
                        req.response().setStatusCode(403).putHeader("Connection", "close").end();
                    }
                }).listen().<Void>mapEmpty().onComplete(started);
            }
        }).map(id -> {
            internalDeployment = id;
            return internal.actualPort();
        });
    }

    /** {@code access:} (tests reload its users); null when nothing is restricted. */
    dev.registrymirror.proxy.access.AccessControl access() {
        return access;
    }

    /** The loopback listener's port (tests). */
    int internalPort() {
        return internal.actualPort();
    }

    /** Reads {@code server.tls}'s files again now, as the periodic check does (tests call it). */
    Future<Boolean> reloadTls() {
        return tls == null ? Future.succeededFuture(false) : tls.reloadIfChanged(vertx);
    }

    /** The runner of the configured {@code prefetch:} images (null before the server listens). */
    Prefetcher prefetcher() {
        return prefetcher;
    }

    /** The port the server listens on (useful with port 0). */
    public int port() {
        return port;
    }

    /** The metrics facade. */
    public MirrorMetrics metrics() {
        return metrics;
    }

    /** The hosted repositories' API; null without {@code hosted}. */
    dev.registrymirror.proxy.hosted.HostedRegistry hosted() {
        return hosted;
    }

    /** The cache's storage. */
    Storage storage() {
        return storage;
    }

    /** Requests being answered now. */
    int activeRequests() {
        return handler.active();
    }

    /** Blob downloads under way. */
    int downloadsInFlight() {
        return downloads.size();
    }

    /** The most memory blob transfers have held at once. */
    long downloadMemoryPeak() {
        return downloads.memoryPeak();
    }

    /**
     * Stops gracefully: new requests get a 503 while the responses in progress finish (for at most
     * {@code server.shutdownTimeout}); then the server closes and downloads still under way are
     * abandoned, except those that have every byte: their writes and commits finish (for at most
     * {@code server.shutdownTimeout} again, at least a second), so a blob a client was served is
     * stored. Then temporary files are deleted, the cache index closed (noted as agreeing with the disk) and the upstream clients released. The Vert.x
     * instance is the caller's to close.
     */
    public Future<Void> stop() {
        if (uploadTimer >= 0) {
            vertx.cancelTimer(uploadTimer);
        }
        if (tlsTimer >= 0) {
            vertx.cancelTimer(tlsTimer);
        }
        if (access != null) {
            access.stop();
        }
        Future<Void> prefetchStopped = prefetcher == null ? Future.succeededFuture() : prefetcher.stop();
        return prefetchStopped.eventually(() -> handler.drain(config.server().shutdownTimeout()))
                .compose(v -> deployment == null ? Future.<Void>succeededFuture() : vertx.undeploy(deployment))
                .eventually(() -> internalDeployment == null ? Future.succeededFuture() : vertx.undeploy(internalDeployment))
                .eventually(() -> downloads.abandonAll()
                        .timeout(Math.max(1000, config.server().shutdownTimeout().toMillis()), TimeUnit.MILLISECONDS)
                        .otherwise(err -> {
                            LOG.warn("stopping with {} blob downloads still writing or committing; they are not stored",
                                    downloads.size());
                            return null;
                        }))
                .eventually(() -> blocking.run(() -> {
                    storage.removeTemporaryFiles();
                    return null;
                }))
                .eventually(() -> blocking.run(() -> {
                    storage.close(); // waits for the upkeep's batch under way, then closes the index
                    if (hostedStore != null) {
                        hostedStore.close();
                    }
                    return null;
                }))
                .eventually(() -> {
                    if (cluster != null) {
                        cluster.close();
                    }
                    connections.stop(vertx);
                    upstreams.values().forEach(UpstreamClient::close);
                    blocking.close();
                    return Future.succeededFuture();
                });
    }
}
