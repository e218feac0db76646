package dev.registrymirror.proxy;

import dev.registrymirror.cache.BlobStore;
import dev.registrymirror.cache.ManifestStore;
import dev.registrymirror.cache.TagStore;
import dev.registrymirror.config.MirrorConfig;
import dev.registrymirror.metrics.MirrorMetrics;
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
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A running mirror: stores opened, upstream clients made, the HTTP server listening on one event
 * loop per core. Start-up asks no upstream.
 */
public final class Mirror {
    private static final Logger LOG = LoggerFactory.getLogger(Mirror.class);
    static final long MANIFEST_MEMORY_BYTES = 64L << 20;
    static final int TAG_MEMORY_ENTRIES = 100_000;

    private final Vertx vertx;
    private final MirrorMetrics metrics;
    private final InflightDownloads downloads;
    private final Map<String, UpstreamClient> upstreams;
    private final RegistryHandler handler;
    private final MirrorConfig config;
    private String deployment;
    private int port;

    private Mirror(Vertx vertx, MirrorConfig config, Clock clock) throws IOException {
        this.vertx = vertx;
        this.metrics = MirrorMetrics.create();
        BlobStore blobStore = BlobStore.open(config.storage().path());
        ManifestStore manifestStore = ManifestStore.open(config.storage().path(), MANIFEST_MEMORY_BYTES);
        TagStore tagStore = TagStore.open(config.storage().path(), TAG_MEMORY_ENTRIES);
        metrics.storedBytes("blob", blobStore::storedBytes);
        metrics.storedBytes("manifest", manifestStore::storedBytes);
        this.upstreams = new LinkedHashMap<>();
        for (MirrorConfig.Upstream u : config.upstreams()) {
            upstreams.put(u.name(), new UpstreamClient(vertx, u, metrics, clock));
        }
        this.downloads = new InflightDownloads(vertx, blobStore, metrics);
        BlobService blobs = new BlobService(vertx, blobStore, downloads, metrics);
        ManifestService manifests = new ManifestService(vertx, manifestStore, tagStore, metrics, clock);
        this.handler = new RegistryHandler(config, Map.copyOf(upstreams), blobs, manifests, new PassThrough(metrics),
                metrics);
        this.config = config;
    }

    /** A Vert.x instance set up for a mirror (native transport where available). */
    public static Vertx newVertx() {
        return Vertx.vertx(new VertxOptions().setPreferNativeTransport(true));
    }

    /** Starts a mirror on {@code vertx}, with the given clock (tests advance it). */
    public static Future<Mirror> start(Vertx vertx, MirrorConfig config, Clock clock) {
        return vertx.executeBlocking(() -> new Mirror(vertx, config, clock)).compose(Mirror::listen);
    }

    private Future<Mirror> listen() {
        int instances = Math.max(1, Runtime.getRuntime().availableProcessors());
        HttpServerOptions options = new HttpServerOptions()
                .setHost(config.server().host())
                .setPort(config.server().port())
                .setCompressionSupported(false)
                .setTcpNoDelay(true)
                .setMaxInitialLineLength(8192)
                .setMaxHeaderSize(16384);
        return vertx.deployVerticle(() -> new AbstractVerticle() {
                    @Override
                    public void start(Promise<Void> started) {
                        vertx.createHttpServer(options).requestHandler(handler).listen()
                                .onSuccess(server -> {
                                    port = server.actualPort();
                                    started.complete();
                                })
                                .onFailure(started::fail);
                    }
                }, new DeploymentOptions().setInstances(instances))
                .map(id -> {
                    deployment = id;
                    LOG.info("registry mirror listening on {}:{}, storage {}, upstreams {}", config.server().host(),
                            port, config.storage().path().toAbsolutePath().normalize(),
                            String.join(", ", config.upstreams().stream()
                                    .map(u -> u.name() + "=" + u.url()).toList()));
                    return this;
                });
    }

    /** The port the server listens on (useful with port 0). */
    public int port() {
        return port;
    }

    /** The metrics facade. */
    public MirrorMetrics metrics() {
        return metrics;
    }

    /** Blob downloads under way. */
    int downloadsInFlight() {
        return downloads.size();
    }

    /** Stops listening and releases the upstream clients. The Vert.x instance is the caller's to close. */
    public Future<Void> stop() {
        Future<Void> undeployed = deployment == null ? Future.succeededFuture() : vertx.undeploy(deployment);
        return undeployed.eventually(() -> {
            upstreams.values().forEach(UpstreamClient::close);
            return Future.succeededFuture();
        });
    }
}
