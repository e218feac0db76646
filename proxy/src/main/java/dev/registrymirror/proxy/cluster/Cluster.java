package dev.registrymirror.proxy.cluster;

import dev.registrymirror.cache.ContentKind;
import dev.registrymirror.cache.Digest;
import dev.registrymirror.config.MirrorConfig;
import dev.registrymirror.metrics.MirrorMetrics;
import io.vertx.core.Future;
import io.vertx.core.Vertx;
import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.upstream.Bodies;
import dev.registrymirror.proxy.upstream.Sender;
import io.vertx.core.MultiMap;
import io.vertx.core.http.HttpClient;
import io.vertx.core.http.HttpClientResponse;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.RequestOptions;
import io.vertx.core.json.JsonObject;
import io.vertx.core.http.HttpClientOptions;
import io.vertx.core.http.PoolOptions;
import java.net.URI;
import java.time.Clock;
import java.util.List;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentMap;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * This replica's view of the cluster it forms one cache with: who the members are ({@link
 * Membership}), who owns a piece of content ({@link Ring}), and how to reach an owner (the internal
 * hop, signed with {@link HopAuth}). Until the membership is joined (in the background, after the
 * server listens) the replica is alone and owns everything.
 */
public final class Cluster implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(Cluster.class);
    /** A hop's body may stay silent this long before the stream is given up. */
    public static final java.time.Duration HOP_IDLE = java.time.Duration.ofSeconds(30);

    private final MirrorConfig.Cluster config;
    private final HopAuth hops;
    private final MirrorMetrics metrics;
    private final Vertx vertx;
    private volatile Membership membership;
    private volatile boolean closed;
    /** The members before the last change (empty before the first): who held content that moved since. */
    private volatile List<URI> previous = List.of();
    private volatile List<URI> current = List.of();
    /** Members that left (failed, or stopped) since this replica joined, and when it saw them go. */
    private final ConcurrentMap<URI, java.time.Instant> departed = new ConcurrentHashMap<>();
    private final Clock clock;
    /** One client per event loop, as for upstreams: a hop's chunks arrive on the loop that streams them. */
    private final ConcurrentMap<Thread, HttpClient> clients = new ConcurrentHashMap<>();

    public Cluster(Vertx vertx, MirrorConfig.Cluster config, Clock clock, MirrorMetrics metrics) {
        this.vertx = vertx;
        this.config = config;
        this.metrics = metrics;
        this.hops = new HopAuth(Membership.derive(config, "hop"), clock);
        this.clock = clock;
        metrics.clusterMembers(() -> members().size());
    }

    /** Joins the membership on a worker thread; the future completes once it is joined. */
    public Future<Void> start() {
        return vertx.executeBlocking(() -> {
            Membership m = Membership.join(config);
            m.onChange(members -> {
                previous = current;
                current = members;
                java.time.Instant now = clock.instant();
                for (URI gone : previous) {
                    if (!members.contains(gone)) {
                        departed.put(gone, now);
                    }
                }
                members.forEach(departed::remove);
                metrics.membershipChanged();
            });
            current = m.members();
            if (closed) {
                m.close();
            } else {
                membership = m;
                LOG.info("cluster {}: joined as {}, {} members: {}", config.name(), config.url(), m.members().size(),
                        m.members());
            }
            return null;
        }, false);
    }

    /** The live members' registry URLs, sorted; only this replica until the membership is joined. */
    public List<URI> members() {
        Membership m = membership;
        return m == null ? List.of(config.url()) : m.members();
    }

    /** Members that left since this replica joined and have not come back, with when they went. */
    public java.util.Map<URI, java.time.Instant> departed() {
        return java.util.Map.copyOf(departed);
    }

    /** {@code cluster.copies}. */
    public int copies() {
        return config.copies();
    }

    /** Whether the membership has been joined (until then this replica is alone). */
    public boolean joined() {
        return membership != null;
    }

    /** This replica's registry URL. */
    public URI self() {
        return config.url();
    }

    /** The replicas that keep {@code digest} of {@code kind}, the owner first ({@code cluster.copies} of them). */
    public List<URI> owners(ContentKind kind, Digest digest) {
        return Ring.owners(members(), kind.label() + " " + digest, config.copies());
    }

    /** The owner of a tag ({@code upstream/repository:tag}): the only replica that revalidates it upstream. */
    public URI tagOwner(String upstream, String repository, String tag) {
        return Ring.owners(members(), "tag " + upstream + "/" + repository + ":" + tag, 1).get(0);
    }

    /**
     * Whether this replica is the first owner of {@code digest}: the one that fetches it from the
     * upstream. A second copy's holder ({@code cluster.copies} &gt; 1) is an owner but not the first.
     */
    public boolean firstOwner(ContentKind kind, Digest digest) {
        return owners(kind, digest).get(0).equals(self());
    }

    /**
     * The other replicas that may hold {@code digest} already, to ask (from their disks only) before the
     * upstream: those that owned it before the last membership change and are still here (a replica
     * that joined takes over keys whose bytes are on the one that had them), then the next replicas in
     * HRW order after this one among the owners (the previous owner of a key this replica won by
     * joining or returning, or the first copy's holder). At most two: a miss costs a round trip each.
     */
    public List<URI> pastHolders(ContentKind kind, Digest digest) {
        List<URI> live = members();
        String key = kind.label() + " " + digest;
        java.util.LinkedHashSet<URI> holders = new java.util.LinkedHashSet<>();
        for (URI u : Ring.owners(previous, key, config.copies())) {
            if (live.contains(u)) {
                holders.add(u);
            }
        }
        holders.addAll(Ring.owners(live, key, config.copies() + 1));
        holders.remove(self());
        return holders.stream().limit(2).toList();
    }

    /** Replicas whose failure to answer was logged in the last minute. */
    private final com.github.benmanes.caffeine.cache.Cache<URI, Boolean> unreachableLogged =
            com.github.benmanes.caffeine.cache.Caffeine.newBuilder().expireAfterWrite(java.time.Duration.ofMinutes(1))
                    .maximumSize(1000).build();

    /**
     * Logs that {@code replica} did not answer a hop, and what this replica does instead; once a
     * minute per replica (until the membership notices it gone, every request for its share fails
     * the same way).
     */
    public void unreachable(URI replica, Throwable cause, String instead) {
        if (unreachableLogged.asMap().putIfAbsent(replica, Boolean.TRUE) == null) {
            LOG.warn("cluster: {} did not answer ({}); {} (logged once a minute while it lasts)", replica,
                    cause.toString(), instead);
        }
    }

    /** Signs and checks hops. */
    public HopAuth hops() {
        return hops;
    }

    public String name() {
        return config.name();
    }

    /** The HTTP client of the calling event loop for hops to other replicas. */
    public HttpClient client() {
        return clients.computeIfAbsent(Thread.currentThread(), k -> newClient());
    }

    private HttpClient newClient() {
        return vertx.createHttpClient(new HttpClientOptions().setKeepAlive(true).setMaxChunkSize(256 * 1024)
                .setConnectTimeout(2000).setIdleTimeout((int) HOP_IDLE.toSeconds()).setDecompressionSupported(false),
                new PoolOptions().setHttp1MaxSize(64));
    }

    /**
     * Sends a hop to {@code replica}: {@code uri} (path and query) signed with the cluster's secret,
     * with {@code headers}; the answer comes paused. Counted as an outgoing hop once answered.
     */
    public Future<HttpClientResponse> send(URI replica, HttpMethod method, String uri, MultiMap headers) {
        RequestOptions options = new RequestOptions().setMethod(method).setAbsoluteURI(replica + uri)
                .setIdleTimeout(HOP_IDLE.toMillis())
                .putHeader(HopAuth.HEADER, hops.sign(method.name(), uri));
        if (headers != null) {
            options.setHeaders(MultiMap.caseInsensitiveMultiMap().addAll(headers)
                    .set(HopAuth.HEADER, hops.sign(method.name(), uri)));
        }
        return client().request(options).compose(req -> req.send()).map(resp -> {
            resp.pause();
            metrics.hop("out");
            return resp;
        });
    }

    /**
     * The error a replica answered, as this replica's own: the OCI error it sent, else its status. Read
     * up to 64 KiB: a replica is trusted, but no body of unchecked size is held.
     */
    public Future<RegistryError> error(URI replica, HttpClientResponse in) {
        int status = in.statusCode();
        return Bodies.small(in).map(body -> {
            String code = "UNAVAILABLE";
            String message = "the replica " + replica + " answered " + status;
            try {
                JsonObject e = body.toJsonObject().getJsonArray("errors").getJsonObject(0);
                code = e.getString("code", code);
                message = e.getString("message", message);
            } catch (RuntimeException notOci) {
                // keep the status
            }
            // A replica that fails (5xx, 429) fails as an upstream would: an expired tag is served meanwhile.
            return new RegistryError(status >= 400 && status < 600 ? status : 502, code, message,
                    in.getHeader(HttpHeaders.RETRY_AFTER), status >= 500 || status == 429 ? "replica" : null);
        });
    }

    /** A replica as the sender of a body this one reads: hop bytes are counted as such. */
    public Sender sender(URI replica) {
        return new Sender() {
            @Override
            public String name() {
                return "replica " + replica;
            }

            @Override
            public java.time.Duration idleTimeout() {
                return HOP_IDLE;
            }

            @Override
            public void received(long bytes) {
                metrics.hopBytes("out", bytes);
            }

            @Override
            public void countError(String reason) {
                LOG.warn("cluster: the hop to {} failed ({})", replica, reason);
            }
        };
    }

    public MirrorMetrics metrics() {
        return metrics;
    }

    @Override
    public void close() {
        closed = true;
        Membership m = membership;
        if (m != null) {
            m.close();
        }
        clients.values().forEach(HttpClient::close);
    }
}
