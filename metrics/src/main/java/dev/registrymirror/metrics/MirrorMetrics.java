package dev.registrymirror.metrics;

import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.Meter;
import io.micrometer.core.instrument.Timer;
import io.micrometer.core.instrument.binder.jvm.ClassLoaderMetrics;
import io.micrometer.core.instrument.binder.jvm.JvmGcMetrics;
import io.micrometer.core.instrument.binder.jvm.JvmMemoryMetrics;
import io.micrometer.core.instrument.binder.jvm.JvmThreadMetrics;
import io.micrometer.core.instrument.binder.system.FileDescriptorMetrics;
import io.micrometer.core.instrument.binder.system.ProcessorMetrics;
import io.micrometer.core.instrument.binder.system.UptimeMetrics;
import io.micrometer.core.instrument.config.MeterFilter;
import io.micrometer.prometheusmetrics.PrometheusConfig;
import io.micrometer.prometheusmetrics.PrometheusMeterRegistry;
import java.util.List;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.LongSupplier;

/**
 * The mirror's metrics, one method per thing that happens. Meter names follow Prometheus
 * conventions once exported: base units, {@code _total} counters, few label values.
 *
 * <p>Implementation note: meters are looked up once per label combination and kept in maps, so the
 * hot path is a map lookup and an atomic add.
 */
public final class MirrorMetrics {
    /** The content type of {@link #scrape()}. */
    public static final String CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

    private static final String PREFIX = "registrymirror.";
    /** The reasons an exchange with an upstream fails, as {@link #upstreamError} counts them. */
    private static final List<String> UPSTREAM_ERRORS = List.of("connect", "timeout", "tls", "reset", "status_5xx",
            "rate_limited", "auth", "digest_mismatch", "protocol");
    private static final String SERVED = "Bytes of blobs and manifests sent to clients, by where they came from";

    private final PrometheusMeterRegistry registry;
    private final ConcurrentMap<String, Timer> requestTimers = new ConcurrentHashMap<>();
    private final ConcurrentMap<String, Timer> upstreamTimers = new ConcurrentHashMap<>();
    private final ConcurrentMap<String, Counter> counters = new ConcurrentHashMap<>();
    private final ConcurrentMap<String, AtomicLong> rateLimits = new ConcurrentHashMap<>();
    private final Counter servedFromCache;
    private final Counter servedFromUpstream;

    private MirrorMetrics(PrometheusMeterRegistry registry) {
        this.registry = registry;
        this.servedFromCache = bytesCounter("served", SERVED, "source", "cache");
        this.servedFromUpstream = bytesCounter("served", SERVED, "source", "upstream");
    }

    /**
     * Starts every counter whose label values are known in advance at 0, for each of these upstreams,
     * so that dashboards and {@code rate()} see a series from the first scrape rather than only after
     * its first event. (Request timers are left out: their statuses are open-ended; and the rate-limit
     * gauge stays absent until an upstream reports one.)
     */
    public void startAtZero(List<String> upstreams) {
        for (String reason : List.of("network", "bad_credentials", "unauthenticated", "forbidden", "rate_limited",
                "throttled", "busy")) {
            counter("access.denied", "Client requests refused by the access rules, by reason", "reason", reason);
        }
        for (String kind : List.of("blob", "manifest", "tag")) {
            cacheHits(kind);
            cacheMisses(kind);
        }
        for (String kind : List.of("blob", "manifest")) {
            for (String reason : List.of("size", "age", "disk")) {
                evictions(kind, reason);
                evictedBytes(kind, reason);
            }
            corruptCounter(kind);
        }
        for (String reason : List.of("disk_full", "io")) {
            storageErrors(reason);
        }
        for (String task : List.of("scan", "upkeep")) {
            storageTaskFailures(task);
        }
        for (String result : List.of("ok", "failed")) {
            prefetchRuns(result);
        }
        for (String reason : List.of("disk", "memory")) {
            downloadPauses(reason);
        }
        passThroughs();
        rangesFromUpstream();
        for (String reason : List.of("limit", "per_client")) {
            connectionsRefused(reason);
        }
        for (String reason : List.of("header_timeout", "keepalive_timeout")) {
            connectionsClosed(reason);
        }
        for (String upstream : upstreams) {
            for (String reason : List.of("unreachable", "error", "rate_limited")) {
                staleCounter(upstream, reason);
            }
            for (String reason : UPSTREAM_ERRORS) {
                upstreamErrors(upstream, reason);
            }
            upstreamRetries(upstream);
            upstreamReceived(upstream);
        }
    }

    /** A fresh registry with JVM and process metrics bound. */
    public static MirrorMetrics create() {
        PrometheusMeterRegistry registry = new PrometheusMeterRegistry(PrometheusConfig.DEFAULT);
        // Keep the exposition clean for `promtool check metrics`: no "_count" gauge, no "ns" unit.
        registry.config().meterFilter(new MeterFilter() {
                    @Override
                    public Meter.Id map(Meter.Id id) {
                        return id.getName().equals("system.cpu.count") ? id.withName("system.cpu.processors") : id;
                    }
                })
                .meterFilter(MeterFilter.deny(id -> id.getName().equals("process.cpu.time")));
        new ClassLoaderMetrics().bindTo(registry);
        new JvmMemoryMetrics().bindTo(registry);
        new JvmGcMetrics().bindTo(registry);
        new JvmThreadMetrics().bindTo(registry);
        new ProcessorMetrics().bindTo(registry);
        new UptimeMetrics().bindTo(registry);
        new FileDescriptorMetrics().bindTo(registry);
        return new MirrorMetrics(registry);
    }

    /** The Prometheus text exposition of every meter. */
    public String scrape() {
        return registry.scrape();
    }

    /** A client request was answered. {@code route} is one of a few fixed names (blob, manifest, …). */
    public void requestServed(String route, String method, int status, long nanos) {
        timer(requestTimers, "requests", "Client requests answered, by route, method and status",
                "route", route, "method", method, "status", Integer.toString(status)).record(nanos, TimeUnit.NANOSECONDS);
    }

    /** Refused client requests, by reason: network, bad_credentials, unauthenticated, forbidden, rate_limited. */
    public void accessDenied(String reason) {
        counter("access.denied", "Client requests refused by the access rules, by reason", "reason", reason).increment();
    }

    /**
     * Counts since start, for the status page.
     *
     * @param hits              requests answered from the cache (blobs, manifests, tags)
     * @param misses            requests that needed the upstream
     * @param bytesFromCache    bytes sent to clients from the cache: what the upstreams did not have to send
     * @param bytesFromUpstream bytes sent to clients as they arrived from an upstream
     */
    public record Totals(long hits, long misses, long bytesFromCache, long bytesFromUpstream) {
    }

    public Totals totals() {
        long hits = 0;
        long misses = 0;
        for (String kind : List.of("blob", "manifest", "tag")) {
            hits += (long) cacheHits(kind).count();
            misses += (long) cacheMisses(kind).count();
        }
        return new Totals(hits, misses, (long) servedFromCache.count(), (long) servedFromUpstream.count());
    }

    /** A request was answered from the cache. {@code kind}: blob, manifest or tag. */
    public void cacheHit(String kind) {
        cacheHits(kind).increment();
    }

    private Counter cacheHits(String kind) {
        return counter("cache.hits", "Requests answered from the cache, by kind of content", "kind", kind);
    }

    /** A request needed the upstream. {@code kind}: blob, manifest or tag. */
    public void cacheMiss(String kind) {
        cacheMisses(kind).increment();
    }

    private Counter cacheMisses(String kind) {
        return counter("cache.misses", "Requests that needed the upstream, by kind of content", "kind", kind);
    }

    /** A cached tag (or tag list) was served because the upstream could not be asked. {@code reason}: unreachable, error, rate_limited. */
    public void staleServed(String upstream, String reason) {
        staleCounter(upstream, reason).increment();
    }

    private Counter staleCounter(String upstream, String reason) {
        return counter("stale.served", "Expired tags and earlier tag lists served because the upstream failed",
                "upstream", upstream, "reason", reason);
    }

    /** Bytes sent to a client from the cache. */
    public void bytesFromCache(long bytes) {
        servedFromCache.increment(bytes);
    }

    /** Bytes sent to a client as they arrived from the upstream. */
    public void bytesFromUpstream(long bytes) {
        servedFromUpstream.increment(bytes);
    }

    /**
     * One upstream request finished. {@code kind}: token, manifest, blob, tags, referrers;
     * {@code status}: the HTTP status, or 0 when none was received.
     */
    public void upstreamRequest(String upstream, String kind, int status, long nanos) {
        timer(upstreamTimers, "upstream.requests",
                "Requests sent to upstream registries, by upstream, kind and status (0: no answer)",
                "upstream", upstream, "kind", kind, "status", Integer.toString(status)).record(nanos, TimeUnit.NANOSECONDS);
    }

    /**
     * An upstream exchange failed. {@code reason}: connect, timeout, tls, reset, status_5xx, rate_limited,
     * auth, digest_mismatch, protocol.
     */
    public void upstreamError(String upstream, String reason) {
        upstreamErrors(upstream, reason).increment();
    }

    private Counter upstreamErrors(String upstream, String reason) {
        return counter("upstream.errors", "Failed exchanges with upstream registries, by upstream and reason",
                "upstream", upstream, "reason", reason);
    }

    /** A request that got no answer or a 5xx was sent to the upstream again. */
    public void upstreamRetry(String upstream) {
        upstreamRetries(upstream).increment();
    }

    private Counter upstreamRetries(String upstream) {
        return counter("upstream.retries",
                "Upstream requests sent again after a failure, before any byte reached a client", "upstream", upstream);
    }

    /** Body bytes received from an upstream. */
    public void upstreamBytes(String upstream, long bytes) {
        upstreamReceived(upstream).increment(bytes);
    }

    private Counter upstreamReceived(String upstream) {
        return bytesCounter("upstream.received", "Body bytes received from upstream registries", "upstream", upstream);
    }

    /** The upstream reported its remaining pull allowance ({@code ratelimit-remaining}). */
    public void rateLimitRemaining(String upstream, long remaining) {
        rateLimits.computeIfAbsent(upstream, u -> {
            AtomicLong value = new AtomicLong();
            Gauge.builder(PREFIX + "upstream.ratelimit.remaining", value, AtomicLong::doubleValue)
                    .description("Pulls left in the upstream's rate-limit window, as it last reported")
                    .tag("upstream", u).register(registry);
            return value;
        }).set(remaining);
    }

    /** Registers the gauge of blob downloads from upstreams under way. */
    /** Reports the client connections open now, and the most allowed at once. */
    public void clientConnections(LongSupplier open, long limit) {
        Gauge.builder(PREFIX + "client.connections", open, s -> s.getAsLong()).strongReference(true)
                .description("Client connections open").register(registry);
        Gauge.builder(PREFIX + "client.connections.limit", () -> limit).strongReference(true)
                .description("Client connections allowed at once (server.maxConnections)").register(registry);
    }

    /** A client connection was refused as it opened: {@code limit} (all) or {@code per_client}. */
    public void connectionRefused(String reason) {
        connectionsRefused(reason).increment();
    }

    private Counter connectionsRefused(String reason) {
        return counter("connections.refused", "Client connections closed as they opened, over a limit", "reason", reason);
    }

    /**
     * A client connection was closed for idling: {@code header_timeout} (no whole request head in
     * time) or {@code keepalive_timeout} (idle between requests).
     */
    public void connectionClosed(String reason) {
        connectionsClosed(reason).increment();
    }

    private Counter connectionsClosed(String reason) {
        return counter("connections.closed", "Client connections the mirror closed for idling", "reason", reason);
    }

    public void downloadsInFlight(LongSupplier count) {
        Gauge.builder(PREFIX + "downloads.inflight", count, s -> s.getAsLong()).strongReference(true)
                .description("Blob downloads from upstreams under way").register(registry);
    }

    /**
     * Registers the gauges of the memory that blobs on their way from upstreams hold (chunks kept for
     * readers and chunks not yet on disk), and its limit ({@code server.downloadMemory}).
     */
    public void downloadMemory(LongSupplier used, long limit) {
        Gauge.builder(PREFIX + "download.memory", used, s -> s.getAsLong()).strongReference(true).baseUnit("bytes")
                .description("Memory held by blob downloads under way").register(registry);
        Gauge.builder(PREFIX + "download.memory.limit", () -> limit).strongReference(true).baseUnit("bytes")
                .description("The memory blob downloads may hold (server.downloadMemory)").register(registry);
    }

    /**
     * Registers the gauges of the memory that upstream answers held whole (manifests, tag lists,
     * referrers, token answers) take, and its limit ({@code server.bodyMemory}).
     */
    public void bodyMemory(LongSupplier used, long limit) {
        Gauge.builder(PREFIX + "body.memory", used, s -> s.getAsLong()).strongReference(true).baseUnit("bytes")
                .description("Memory held by upstream answers read whole (manifests, tag lists, referrers, tokens)")
                .register(registry);
        Gauge.builder(PREFIX + "body.memory.limit", () -> limit).strongReference(true).baseUnit("bytes")
                .description("The memory upstream answers read whole may hold (server.bodyMemory)").register(registry);
    }

    /** Registers the gauge of the cluster's live members as this replica sees them (itself included). */
    public void clusterMembers(java.util.function.IntSupplier members) {
        Gauge.builder(PREFIX + "cluster.members", members, s -> s.getAsInt()).strongReference(true)
                .description("Live members of the cluster as this replica sees them, itself included")
                .register(registry);
        for (String direction : List.of("in", "out")) {
            hopRequests(direction);
            hopBytes(direction);
        }
        membershipChanges();
    }

    /**
     * A request between replicas for content one of them owns: {@code out} when this replica asked the
     * owner, {@code in} when it answered another as the owner.
     */
    public void hop(String direction) {
        hopRequests(direction).increment();
    }

    /** Body bytes a request between replicas carried ({@code direction} as for {@link #hop}). */
    public void hopBytes(String direction, long bytes) {
        hopBytes(direction).increment(bytes);
    }

    private Counter hopRequests(String direction) {
        return counter("cluster.hop.requests", "Requests between replicas for content one of them owns, by direction",
                "direction", direction);
    }

    private Counter hopBytes(String direction) {
        return bytesCounter("cluster.hop.bytes", "Body bytes between replicas, by direction", "direction", direction);
    }

    /** Hop traffic since the start, as the status page shows it. */
    public record Hops(long requestsIn, long requestsOut, long bytesIn, long bytesOut, long membershipChanges) {
    }

    public Hops hops() {
        return new Hops((long) hopRequests("in").count(), (long) hopRequests("out").count(),
                (long) hopBytes("in").count(), (long) hopBytes("out").count(), (long) membershipChanges().count());
    }

    /** The cluster's members changed, and with them who owns what. */
    public void membershipChanged() {
        membershipChanges().increment();
    }

    private Counter membershipChanges() {
        return counter("cluster.membership.changes", "Changes of the cluster's members (and so of who owns what)");
    }

    /**
     * A blob download stopped reading its upstream until its temporary file caught up. {@code reason}:
     * disk (its own writes queued up) or memory (all downloads together hold server.downloadMemory).
     */
    public void downloadPaused(String reason) {
        downloadPauses(reason).increment();
    }

    private Counter downloadPauses(String reason) {
        return counter("download.pauses", "Times a blob download waited for the disk before reading its upstream on",
                "reason", reason);
    }

    /** Registers the gauge of bytes held in storage, by kind (blob, manifest). */
    public void storedBytes(String kind, LongSupplier bytes) {
        Gauge.builder(PREFIX + "stored", bytes, s -> s.getAsLong()).strongReference(true).baseUnit("bytes")
                .tag("kind", kind)
                .description("Bytes held in the cache's storage").register(registry);
    }

    /** Registers the gauge of items held in storage, by kind (blob, manifest). */
    public void storedItems(String kind, LongSupplier count) {
        Gauge.builder(PREFIX + "stored.items", count, s -> s.getAsLong()).strongReference(true).tag("kind", kind)
                .description("Blobs and manifests held in the cache's storage").register(registry);
    }

    /** Registers the gauge of {@code storage.maxSize} (absent when there is no limit). */
    public void storageLimit(long bytes) {
        Gauge.builder(PREFIX + "storage.limit", () -> bytes).strongReference(true).baseUnit("bytes")
                .description("The configured storage.maxSize").register(registry);
    }

    /**
     * Registers the gauges of the usable space on the cache's file system as last seen (NaN before the
     * first look) and of {@code storage.minFree} (absent when 0).
     */
    public void storageFreeSpace(LongSupplier usable, long minFree) {
        Gauge.builder(PREFIX + "storage.free", usable, s -> {
                    long v = s.getAsLong();
                    return v < 0 ? Double.NaN : v;
                }).strongReference(true).baseUnit("bytes")
                .description("Usable space on the cache's file system, as last seen (each download, commit and upkeep)")
                .register(registry);
        if (minFree > 0) {
            Gauge.builder(PREFIX + "storage.min.free", () -> minFree).strongReference(true).baseUnit("bytes")
                    .description("The configured storage.minFree").register(registry);
        }
    }

    /** Content was removed to respect a limit. {@code reason}: size (maxSize), age (maxAge) or disk (minFree). */
    public void evicted(String kind, String reason, long bytes) {
        evictions(kind, reason).increment();
        evictedBytes(kind, reason).increment(bytes);
    }

    private Counter evictions(String kind, String reason) {
        return counter("evictions", "Blobs and manifests removed from storage to respect maxSize, maxAge or minFree",
                "kind", kind, "reason", reason);
    }

    private Counter evictedBytes(String kind, String reason) {
        return bytesCounter("evicted", "Bytes removed from storage to respect maxSize, maxAge or minFree", "kind", kind,
                "reason", reason);
    }

    /** A stored file did not match its digest and was deleted (it is fetched again when asked for). */
    // ---------------------------------------------------------------- hosted repositories

    /**
     * Registers the gauges of hosted content: bytes and items by kind, open uploads, and the quota
     * ({@code hosted.maxSize}; absent when there is none). Starts the hosted counters at 0.
     */
    public void hosted(LongSupplier bytes, LongSupplier blobs, LongSupplier manifests, LongSupplier uploads, long quota) {
        Gauge.builder(PREFIX + "hosted.stored", bytes, s -> s.getAsLong()).strongReference(true).baseUnit("bytes")
                .description("Bytes of hosted repositories' blobs and manifests (never evicted)").register(registry);
        Gauge.builder(PREFIX + "hosted.stored.items", blobs, s -> s.getAsLong()).strongReference(true)
                .tag("kind", "blob").description("Blobs and manifests of hosted repositories").register(registry);
        Gauge.builder(PREFIX + "hosted.stored.items", manifests, s -> s.getAsLong()).strongReference(true)
                .tag("kind", "manifest").description("Blobs and manifests of hosted repositories").register(registry);
        Gauge.builder(PREFIX + "hosted.uploads", uploads, s -> s.getAsLong()).strongReference(true)
                .description("Blob uploads open now (pushes under way or left unfinished)").register(registry);
        if (quota > 0) {
            Gauge.builder(PREFIX + "hosted.limit", () -> quota).strongReference(true).baseUnit("bytes")
                    .description("The configured hosted.maxSize").register(registry);
        }
        for (String kind : List.of("blob", "manifest")) {
            hostedPushes(kind);
            hostedCollected(kind);
        }
        hostedPushedBytes();
        hostedCollectedBytes();
        hostedRefusals("quota");
        hostedRefusals("invalid");
        for (String result : List.of("ok", "failed")) {
            hostedCollections(result);
        }
    }

    /** A blob or manifest pushed to a hosted repository ({@code bytes}: its length). */
    public void hostedPushed(String kind, long bytes) {
        hostedPushes(kind).increment();
        hostedPushedBytes().increment(bytes);
    }

    /** A push refused: {@code quota} (over hosted.maxSize) or {@code invalid} (a digest or manifest that does not check). */
    public void hostedRefused(String reason) {
        hostedRefusals(reason).increment();
    }

    /** A garbage collection of hosted content ended, having removed what it counts. */
    public void hostedCollection(boolean ok, long manifests, long blobs, long bytes) {
        hostedCollections(ok ? "ok" : "failed").increment();
        hostedCollected("manifest").increment(manifests);
        hostedCollected("blob").increment(blobs);
        hostedCollectedBytes().increment(bytes);
    }

    private Counter hostedPushes(String kind) {
        return counter("hosted.pushes", "Blobs and manifests pushed to hosted repositories", "kind", kind);
    }

    private Counter hostedPushedBytes() {
        return bytesCounter("hosted.pushed", "Bytes pushed to hosted repositories (blobs and manifests)");
    }

    private Counter hostedRefusals(String reason) {
        return counter("hosted.push.refusals", "Pushes refused: over hosted.maxSize (quota) or content that does not"
                + " check (invalid)", "reason", reason);
    }

    private Counter hostedCollections(String result) {
        return counter("hosted.gc.runs", "Garbage collections of hosted repositories, by result", "result", result);
    }

    private Counter hostedCollected(String kind) {
        return counter("hosted.gc.removed", "Blobs and manifests garbage collection removed from hosted repositories",
                "kind", kind);
    }

    private Counter hostedCollectedBytes() {
        return bytesCounter("hosted.gc.removed", "Bytes garbage collection removed from hosted repositories");
    }

    /** A run of a {@code prefetch:} image ended: {@code ok} or {@code failed}. */
    public void prefetchRun(String result) {
        prefetchRuns(result).increment();
    }

    private Counter prefetchRuns(String result) {
        return counter("prefetch.runs", "Runs of the configured prefetch images, by result", "result", result);
    }

    /** The storage's start-up scan or upkeep failed (logged; it is tried again). */
    public void storageTaskFailed(String task) {
        storageTaskFailures(task).increment();
    }

    private Counter storageTaskFailures(String task) {
        return counter("storage.task.failures", "Failures of the storage's start-up scan or upkeep, each retried",
                "task", task);
    }

    /** Registers the gauge that is 1 once the cache index agrees with the disk (eviction works only then). */
    public void storageIndexReady(java.util.function.BooleanSupplier ready) {
        Gauge.builder(PREFIX + "storage.index.ready", ready, r -> r.getAsBoolean() ? 1 : 0).strongReference(true)
                .description("1 once the cache index agrees with the disk; until then nothing is evicted")
                .register(registry);
    }

    public void corruptDropped(String kind) {
        corruptCounter(kind).increment();
    }

    private Counter corruptCounter(String kind) {
        return counter("corrupt.dropped", "Stored files that did not match their digest and were deleted", "kind", kind);
    }

    /**
     * The cache could not be written. {@code reason}: disk_full, or io for other errors. The request
     * is still answered, without storing.
     */
    public void storageError(String reason) {
        storageErrors(reason).increment();
    }

    private Counter storageErrors(String reason) {
        return counter("storage.errors", "Failed writes to the cache's storage, by reason", "reason", reason);
    }

    /** A blob miss was streamed to the client from the upstream without being stored (disk full). */
    public void passThrough() {
        passThroughs().increment();
    }

    private Counter passThroughs() {
        return counter("blob.passthrough", "Blob misses streamed without storing, because the disk was full");
    }

    /**
     * A range of a blob still downloading lay far beyond what had arrived, so it was fetched from the
     * upstream on its own (lazy-pulling snapshotters read small ranges of large layers).
     */
    public void rangeFromUpstream() {
        rangesFromUpstream().increment();
    }

    private Counter rangesFromUpstream() {
        return counter("blob.ranges.from.upstream", "Ranges of blobs being downloaded that were fetched from the upstream"
                + " on their own, being far ahead of the download");
    }

    private Counter counter(String name, String description, String... tags) {
        return counter(name, null, description, tags);
    }

    private Counter bytesCounter(String name, String description, String... tags) {
        return counter(name, "bytes", description, tags);
    }

    /** The counter of that name and labels, made on first use; {@code unit} is a base unit or {@code null}. */
    private Counter counter(String name, String unit, String description, String[] tags) {
        return counters.computeIfAbsent(key(name, tags), k -> Counter.builder(PREFIX + name).baseUnit(unit)
                .description(description).tags(tags).register(registry));
    }

    private Timer timer(ConcurrentMap<String, Timer> timers, String name, String description, String... tags) {
        return timers.computeIfAbsent(key(name, tags), k -> Timer.builder(PREFIX + name).description(description)
                .tags(tags).register(registry));
    }

    private static String key(String name, String... tags) {
        StringBuilder key = new StringBuilder(name);
        for (String t : tags) {
            key.append('|').append(t);
        }
        return key.toString();
    }
}
