package dev.registrymirror.proxy.operator;

import dev.registrymirror.proxy.cluster.Cluster;

import dev.registrymirror.cache.ContentKind;
import dev.registrymirror.cache.Storage;
import dev.registrymirror.config.MirrorConfig;
import dev.registrymirror.metrics.MirrorMetrics;
import dev.registrymirror.proxy.blob.InflightDownloads;
import dev.registrymirror.proxy.upstream.UpstreamClient;
import io.vertx.core.Future;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpServerRequest;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.util.Map;
import java.util.function.LongSupplier;
import java.util.function.Predicate;
import java.util.function.Supplier;

/**
 * The status page for people: {@code GET /} from a browser ({@code Accept: text/html}) or
 * {@code GET /status} answers a page from the jar, which fetches {@code /status.json} every two
 * seconds. Its script and style come from this server only, which its Content-Security-Policy
 * enforces. Registry clients never ask for {@code /}; other {@code Accept} headers get the
 * registry's answer as before.
 */
public final class StatusPage {
    public static final String JSON_PATH = "/status.json";
    /** Content-Security-Policy: nothing from other hosts, no inline script or style. */
    public static final String POLICY = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
            + " img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
    static final int TOP_REPOSITORIES = 10;
    static final int RECENT_JOBS = 5;

    /** The page's script and style: their paths and types. */
    private static final Map<String, String> ASSETS = Map.of(
            "/status/status.js", "application/javascript; charset=utf-8",
            "/status/status.css", "text/css; charset=utf-8");

    private final Buffer page = resource("index.html");
    /** The assets' bytes, read from the jar once, by path. */
    private final Map<String, Buffer> assets = ASSETS.keySet().stream().collect(java.util.stream.Collectors.toMap(
            path -> path, path -> resource(path.substring("/status/".length()))));
    private final MirrorConfig config;
    /** Hosted repositories; null without {@code hosted}. */
    private final dev.registrymirror.proxy.hosted.HostedRegistry hosted;
    private final MirrorMetrics metrics;
    private final Map<String, UpstreamClient> upstreams;
    private final InflightDownloads downloads;
    private final Storage storage;
    private final LongSupplier storedBytes;
    private final PullCounts pulls;
    private final Supplier<Prefetcher> prefetcher;
    private final Clock clock;
    private final Instant started;
    private final String version;
    /** The replicas this one forms one cache with; null when it runs alone. */
    private final Cluster cluster;

    /** @param version the mirror's version, as the page shows it */
    public StatusPage(String version, MirrorConfig config, MirrorMetrics metrics, Map<String, UpstreamClient> upstreams,
               InflightDownloads downloads, Storage storage, LongSupplier storedBytes, PullCounts pulls,
               Supplier<Prefetcher> prefetcher, Clock clock, Cluster cluster,
               dev.registrymirror.proxy.hosted.HostedRegistry hosted) {
        this.hosted = hosted;
        this.cluster = cluster;
        this.version = version;
        this.config = config;
        this.metrics = metrics;
        this.upstreams = upstreams;
        this.downloads = downloads;
        this.storage = storage;
        this.storedBytes = storedBytes;
        this.pulls = pulls;
        this.prefetcher = prefetcher;
        this.clock = clock;
        this.started = clock.instant();
    }

    /** A browser's {@code Accept} ({@code text/html,application/xhtml+xml,...}); registry clients never send it. */
    static boolean wantsHtml(String accept) {
        return accept != null && accept.toLowerCase(java.util.Locale.ROOT).contains("text/html");
    }

    /** The page ({@code GET /status}, or {@code GET /} from a browser). */
    Future<Void> page(HttpServerRequest req) {
        return req.response().putHeader("X-Content-Type-Options", "nosniff")
                .putHeader(HttpHeaders.CONTENT_TYPE, "text/html; charset=utf-8")
                .putHeader("Content-Security-Policy", POLICY).putHeader("Referrer-Policy", "no-referrer")
                .putHeader(HttpHeaders.CACHE_CONTROL, "no-cache").end(page);
    }

    /** The page's script or style ({@code GET /status/<name>}); 404 for any other name. */
    Future<Void> asset(HttpServerRequest req) {
        String path = req.path();
        if (!ASSETS.containsKey(path)) {
            return Future.failedFuture(new dev.registrymirror.proxy.route.RegistryError(404, "UNSUPPORTED",
                    "no such file: " + path));
        }
        return req.response().putHeader("X-Content-Type-Options", "nosniff")
                .putHeader(HttpHeaders.CONTENT_TYPE, ASSETS.get(path))
                .putHeader(HttpHeaders.CACHE_CONTROL, "no-cache").end(assets.get(path));
    }

    /**
     * The cluster as this replica sees it: its members (live ones up, those that left since this
     * one joined gone, with when), this replica among them, and the traffic between replicas; null
     * when it runs alone.
     */
    private JsonObject cluster() {
        if (cluster == null) {
            return null;
        }
        JsonArray members = new JsonArray();
        for (java.net.URI m : cluster.members()) {
            members.add(new JsonObject().put("url", m.toString()).put("state", "up")
                    .put("self", m.equals(cluster.self())));
        }
        cluster.departed().entrySet().stream().sorted(Map.Entry.comparingByKey()).forEach(e -> members.add(
                new JsonObject().put("url", e.getKey().toString()).put("state", "gone").put("since", iso(e.getValue()))
                        .put("self", false)));
        MirrorMetrics.Hops h = metrics.hops();
        return new JsonObject().put("name", cluster.name()).put("self", cluster.self().toString())
                .put("joined", cluster.joined()).put("copies", cluster.copies()).put("members", members)
                .put("hops", new JsonObject().put("requestsIn", h.requestsIn()).put("requestsOut", h.requestsOut())
                        .put("bytesIn", h.bytesIn()).put("bytesOut", h.bytesOut()))
                .put("membershipChanges", h.membershipChanges());
    }

    /** {@code GET /status.json}, for a caller who may pull what {@code mayPull} says. */
    Future<Void> data(HttpServerRequest req, Predicate<String> mayPull) {
        return req.response().putHeader("X-Content-Type-Options", "nosniff")
                .putHeader(HttpHeaders.CONTENT_TYPE, "application/json")
                .putHeader(HttpHeaders.CACHE_CONTROL, "no-store").end(status(mayPull).toBuffer());
    }

    /**
     * What the page shows, as {@code /status.json} answers it, to a caller who may pull what
     * {@code mayPull} says: repositories it may not pull (their names, their downloads and their
     * digests, their prefetch jobs) are left out; their pulls count among the others. Reads memory
     * only: never blocks.
     */
    JsonObject status(Predicate<String> mayPull) {
        Instant now = clock.instant();
        MirrorMetrics.Totals t = metrics.totals();
        long asked = t.hits() + t.misses();
        JsonObject cache = new JsonObject().put("hits", t.hits()).put("misses", t.misses())
                .put("hitRatio", asked == 0 ? null : (double) t.hits() / asked)
                .put("bytesFromCache", t.bytesFromCache()).put("bytesFromUpstream", t.bytesFromUpstream());

        JsonArray ups = new JsonArray();
        for (UpstreamClient u : upstreams.values()) {
            UpstreamClient.Health h = u.health();
            ups.add(new JsonObject().put("name", u.name()).put("state", h.state())
                    .put("lastAnswer", iso(h.lastAnswer())).put("lastError", iso(h.lastError()))
                    .put("lastErrorMessage", h.lastErrorMessage())
                    .put("rateLimitRemaining", h.rateLimitRemaining() < 0 ? null : h.rateLimitRemaining()));
        }

        long free = storage.lastFreeSpace();
        JsonObject disk = new JsonObject().put("path", config.storage().path().toAbsolutePath().normalize().toString())
                .put("usedBytes", storedBytes.getAsLong())
                .put("limitBytes", config.storage().maxSize() > 0 ? config.storage().maxSize() : null)
                .put("freeBytes", free < 0 ? null : free)
                .put("blobs", storage.storedCount(ContentKind.BLOB)).put("manifests", storage.storedCount(ContentKind.MANIFEST));

        JsonArray dl = new JsonArray();
        for (InflightDownloads.Progress p : downloads.progress()) {
            if (!mayPull.test(p.source())) {
                continue;
            }
            dl.add(new JsonObject().put("digest", p.digest()).put("source", p.source()).put("bytes", p.bytes())
                    .put("size", p.size() < 0 ? null : p.size()).put("seconds", round(p.seconds()))
                    .put("bytesPerSecond", p.seconds() > 0 ? (long) (p.bytes() / p.seconds()) : null));
        }

        JsonArray top = new JsonArray();
        long hiddenPulls = 0;
        for (PullCounts.Count c : pulls.top(Integer.MAX_VALUE)) {
            if (top.size() < TOP_REPOSITORIES && mayPull.test(c.name())) {
                top.add(new JsonObject().put("name", c.name()).put("pulls", c.pulls()));
            } else if (!mayPull.test(c.name())) {
                hiddenPulls += c.pulls();
            }
        }

        JsonArray jobs = new JsonArray();
        Prefetcher p = prefetcher.get();
        if (p != null) {
            p.jobs().stream().filter(j -> mayPull.test(j.image.upstream() + "/" + j.image.repository()))
                    .limit(RECENT_JOBS).forEach(j -> jobs.add(j.toJson()));
        }

        return new JsonObject().put("version", version).put("started", started.toString())
                .put("now", now.toString()).put("uptimeSeconds", Duration.between(started, now).toSeconds())
                .put("cache", cache).put("upstreams", ups).put("storage", disk).put("downloads", dl)
                .put("topRepositories", top).put("otherPulls", pulls.others() + hiddenPulls).put("prefetch", jobs)
                .put("cluster", cluster()).put("hosted", hosted(mayPull));
    }

    /** Hosted repositories (those the caller may pull), apart from the cached ones; null without {@code hosted}. */
    private JsonObject hosted(Predicate<String> mayPull) {
        if (hosted == null) {
            return null;
        }
        dev.registrymirror.cache.HostedStore s = hosted.store();
        JsonArray repos = new JsonArray();
        long hidden = 0;
        for (dev.registrymirror.cache.HostedStore.Repository r : hosted.repositories()) {
            if (mayPull.test(r.name())) {
                repos.add(new JsonObject().put("name", r.name()).put("tags", r.tags()).put("manifests", r.manifests()));
            } else {
                hidden++;
            }
        }
        return new JsonObject().put("usedBytes", s.bytes())
                .put("limitBytes", config.hosted().maxSize() > 0 ? config.hosted().maxSize() : null)
                .put("blobs", s.blobCount()).put("manifests", s.manifestCount()).put("uploads", hosted.openUploads())
                .put("repositories", repos).put("otherRepositories", hidden);
    }

    private static double round(double seconds) {
        return Math.round(seconds * 10) / 10.0;
    }

    private static String iso(Instant i) {
        return i == null ? null : i.toString();
    }

    private static Buffer resource(String name) {
        try (InputStream in = StatusPage.class.getResourceAsStream("/status/" + name)) {
            if (in == null) {
                throw new IllegalStateException("the jar lacks /status/" + name);
            }
            return Buffer.buffer(in.readAllBytes());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
