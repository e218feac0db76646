package dev.registrymirror.proxy.operator;

import dev.registrymirror.config.MirrorConfig;
import dev.registrymirror.metrics.MirrorMetrics;
import dev.registrymirror.proxy.manifest.MediaTypes;
import io.vertx.core.Future;
import io.vertx.core.Vertx;
import io.vertx.core.http.HttpClient;
import io.vertx.core.http.HttpClientOptions;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.PoolOptions;
import io.vertx.core.http.RequestOptions;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.time.Clock;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedDeque;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Fetches the configured {@code prefetch:} images through the mirror itself, over loopback, exactly
 * as a client pulls: the tag is resolved (answered from cache within its TTL, revalidated after), the
 * platforms asked for are picked from an index, and every blob goes through the one download per
 * digest that clients share. So a client pulling meanwhile shares the download, and a later pull of a
 * prefetched image costs the upstream no blob request. At start-up (without delaying it) and then
 * whenever an entry's {@code every} has passed, checked each minute against the mirror's clock.
 */
public final class Prefetcher {
    private static final Logger LOG = LoggerFactory.getLogger(Prefetcher.class);
    /** Blobs of one image fetched at once. */
    static final int CONCURRENCY = 4;
    private static final String ACCEPT = String.join(", ", MediaTypes.OCI_INDEX, MediaTypes.DOCKER_LIST,
            MediaTypes.OCI_MANIFEST, MediaTypes.DOCKER_MANIFEST);

    private final Vertx vertx;
    private final HttpClient client;
    private final List<MirrorConfig.Prefetch> images;
    private final Clock clock;
    private final MirrorMetrics metrics;
    private final Map<MirrorConfig.Prefetch, Long> lastRun = new ConcurrentHashMap<>();
    /** Jobs under way, one per image: asking for an image being fetched joins its job. */
    private final Map<String, Job> running = new ConcurrentHashMap<>();
    /** The last {@value #KEPT_JOBS} jobs, newest last, for the admin API and the status page. */
    private final ConcurrentLinkedDeque<Job> recent = new ConcurrentLinkedDeque<>();
    private final AtomicLong ids = new AtomicLong();
    private long timer = -1;
    static final int KEPT_JOBS = 100;

    /** What one run fetched. */
    record Result(int manifests, int blobs, long bytes) {
    }

    /**
     * One run of one image, its progress readable from any thread while it runs (counters only go
     * up; {@link #state} is set last).
     */
    static final class Job {
        final String id;
        final MirrorConfig.Prefetch image;
        final String trigger;
        final long startedMillis;
        final AtomicLong manifests = new AtomicLong();
        final AtomicLong blobs = new AtomicLong(-1);
        final AtomicLong blobsDone = new AtomicLong();
        final AtomicLong bytesTotal = new AtomicLong(-1);
        final AtomicLong bytesDone = new AtomicLong();
        volatile String error;
        volatile long finishedMillis;
        volatile String state = "running";
        final io.vertx.core.Promise<Result> done = io.vertx.core.Promise.promise();

        Job(String id, MirrorConfig.Prefetch image, String trigger, long startedMillis) {
            this.id = id;
            this.image = image;
            this.trigger = trigger;
            this.startedMillis = startedMillis;
        }

        /** The job as the admin API shows it. */
        JsonObject toJson() {
            JsonObject j = new JsonObject().put("id", id).put("image", image.image())
                    .put("platforms", new JsonArray(image.platforms())).put("trigger", trigger).put("state", state)
                    .put("started", java.time.Instant.ofEpochMilli(startedMillis).toString())
                    .put("manifests", manifests.get())
                    .put("blobs", blobs.get() < 0 ? null : blobs.get()).put("blobsDone", blobsDone.get())
                    .put("bytes", bytesTotal.get() < 0 ? null : bytesTotal.get()).put("bytesDone", bytesDone.get());
            if (finishedMillis > 0) {
                j.put("finished", java.time.Instant.ofEpochMilli(finishedMillis).toString());
            }
            if (error != null) {
                j.put("error", error);
            }
            return j;
        }
    }

    /** The header and value that the mirror's loopback listener asks of its own requests. */
    private final String secretHeader;
    private final String secret;

    public Prefetcher(Vertx vertx, String host, int port, String secretHeader, String secret,
               List<MirrorConfig.Prefetch> images, Clock clock, MirrorMetrics metrics) {
        this.secretHeader = secretHeader;
        this.secret = secret;
        this.vertx = vertx;
        this.client = vertx.createHttpClient(new HttpClientOptions().setDefaultHost(host).setDefaultPort(port)
                .setKeepAlive(true), new PoolOptions().setHttp1MaxSize(CONCURRENCY));
        this.images = images;
        this.clock = clock;
        this.metrics = metrics;
    }

    /** Runs every image once, in the background, then checks each minute for those due again. */
    public void start() {
        if (images.isEmpty()) {
            return;
        }
        images.forEach(p -> submit(p, "start-up"));
        timer = vertx.setPeriodic(60_000, id -> runDue());
    }

    /** Runs the images whose {@code every} has passed since their last run began. */
    public void runDue() {
        long now = clock.millis();
        for (MirrorConfig.Prefetch p : images) {
            Long last = lastRun.get(p);
            if (p.every() != null && last != null && now - last >= p.every().toMillis()) {
                submit(p, "schedule");
            }
        }
    }

    /** The job fetching {@code p}: a new one, or the one already under way for that image. */
    Job submit(MirrorConfig.Prefetch p, String trigger) {
        Job job = new Job(Long.toString(ids.incrementAndGet()), p, trigger, clock.millis());
        String what = p.image() + " " + p.platforms();
        Job existing = running.putIfAbsent(what, job);
        if (existing != null) {
            return existing;
        }
        recent.addLast(job);
        while (recent.size() > KEPT_JOBS) {
            recent.pollFirst();
        }
        lastRun.put(p, clock.millis());
        long started = System.nanoTime();
        String base = "/v2/" + p.upstream() + "/" + p.repository();
        manifest(base, p.tag())
                .compose(root -> manifests(base, p, root))
                .compose(manifests -> {
                    job.manifests.set(manifests.size());
                    Map<String, Long> blobs = new java.util.LinkedHashMap<>();
                    for (JsonObject m : manifests) {
                        JsonObject config = m.getJsonObject("config");
                        if (config != null) {
                            blobs.put(config.getString("digest"), config.getLong("size", 0L));
                        }
                        for (Object layer : m.getJsonArray("layers", new JsonArray())) {
                            blobs.put(((JsonObject) layer).getString("digest"), ((JsonObject) layer).getLong("size", 0L));
                        }
                    }
                    job.bytesTotal.set(blobs.values().stream().mapToLong(Long::longValue).sum());
                    job.blobs.set(blobs.size());
                    return blobs(base, new ArrayList<>(blobs.keySet()), job)
                            .map(bytes -> new Result(manifests.size(), blobs.size(), bytes));
                })
                // Out of the running jobs before its outcome is told: a run asked for once this one is
                // counted (the schedule's, from another thread) starts anew instead of joining it.
                .andThen(ar -> running.remove(what, job))
                .onSuccess(r -> {
                    job.finishedMillis = clock.millis();
                    job.state = "done";
                    metrics.prefetchRun("ok");
                    LOG.info("prefetched {} ({}, job {}): {} image manifest{}, {} blob{}, {} MiB through the cache in {} ms",
                            p.image(), trigger, job.id, r.manifests(), r.manifests() == 1 ? "" : "s", r.blobs(), r.blobs() == 1 ? "" : "s",
                            r.bytes() >> 20, (System.nanoTime() - started) / 1_000_000);
                })
                .onFailure(err -> {
                    job.finishedMillis = clock.millis();
                    job.error = err.getMessage();
                    job.state = "failed";
                    metrics.prefetchRun("failed");
                    LOG.warn("prefetch of {} failed: {}{}", p.image(), err.getMessage(), trigger.equals("api") ? ""
                            : p.every() != null ? "; tried again in " + p.every().toString().substring(2).toLowerCase()
                                    : "; tried again at the next start");
                })
                .onComplete(job.done);
        return job;
    }

    /** The job with this id, if it is among the last {@value #KEPT_JOBS}. */
    java.util.Optional<Job> job(String id) {
        return recent.stream().filter(j -> j.id.equals(id)).findFirst();
    }

    /** The last {@value #KEPT_JOBS} jobs, newest first. */
    List<Job> jobs() {
        List<Job> list = new ArrayList<>(recent);
        java.util.Collections.reverse(list);
        return list;
    }

    private Future<JsonObject> manifest(String base, String reference) {
        return client.request(new RequestOptions().setMethod(HttpMethod.GET).setURI(base + "/manifests/" + reference)
                        .putHeader("Accept", ACCEPT).putHeader(secretHeader, secret))
                .compose(req -> req.send())
                .compose(resp -> resp.body().compose(body -> resp.statusCode() == 200
                        ? Future.succeededFuture(body.toJsonObject())
                        : Future.failedFuture("manifest " + reference + ": HTTP " + resp.statusCode() + " "
                                + reason(body))));
    }

    /** The mirror's OCI error as {@code CODE: message}, or the body's first 200 characters. */
    static String reason(io.vertx.core.buffer.Buffer body) {
        try {
            JsonObject e = body.toJsonObject().getJsonArray("errors").getJsonObject(0);
            return e.getString("code") + ": " + e.getString("message");
        } catch (RuntimeException notOci) {
            String text = body.toString().replaceAll("\\s+", " ");
            return text.length() > 200 ? text.substring(0, 200) + "..." : text;
        }
    }

    /** The image manifests to fetch: {@code root} itself, or the children of an index for the platforms asked for. */
    private Future<List<JsonObject>> manifests(String base, MirrorConfig.Prefetch p, JsonObject root) {
        JsonArray children = root.getJsonArray("manifests");
        if (children == null) {
            return Future.succeededFuture(List.of(root));
        }
        List<Future<JsonObject>> wanted = new ArrayList<>();
        for (Object c : children) {
            JsonObject child = (JsonObject) c;
            if (p.platforms().isEmpty() || matches(child.getJsonObject("platform"), p.platforms())) {
                wanted.add(manifest(base, child.getString("digest")));
            }
        }
        if (wanted.isEmpty()) {
            return Future.failedFuture("the index has none of the platforms " + p.platforms());
        }
        return Future.all(wanted).map(all -> {
            List<JsonObject> list = new ArrayList<>();
            for (int i = 0; i < all.size(); i++) {
                list.add(all.resultAt(i));
            }
            return list;
        });
    }

    /** Whether an index entry's platform is one of {@code platforms} ({@code os/arch}, or {@code os/arch/variant}). */
    public static boolean matches(JsonObject platform, List<String> platforms) {
        if (platform == null) {
            return false;
        }
        String osArch = platform.getString("os") + "/" + platform.getString("architecture");
        String variant = platform.getString("variant");
        for (String wanted : platforms) {
            if (wanted.equals(osArch) || (variant != null && wanted.equals(osArch + "/" + variant))) {
                return true;
            }
        }
        return false;
    }

    /** GETs every blob, {@value #CONCURRENCY} at a time, the bodies counted and dropped; yields the bytes. */
    private Future<Long> blobs(String base, List<String> digests, Job job) {
        ConcurrentLinkedDeque<String> queue = new ConcurrentLinkedDeque<>(digests);
        List<Future<Void>> workers = new ArrayList<>();
        for (int i = 0; i < Math.min(CONCURRENCY, digests.size()); i++) {
            workers.add(next(base, queue, job));
        }
        return Future.all(workers).map(v -> job.bytesDone.get());
    }

    private Future<Void> next(String base, ConcurrentLinkedDeque<String> queue, Job job) {
        String digest = queue.poll();
        if (digest == null) {
            return Future.succeededFuture();
        }
        return client.request(new RequestOptions().setMethod(HttpMethod.GET).setURI(base + "/blobs/" + digest)
                        .putHeader(secretHeader, secret))
                .compose(req -> req.send())
                .compose(resp -> {
                    if (resp.statusCode() != 200) {
                        return resp.body().compose(b -> Future.<Void>failedFuture("blob " + digest + ": HTTP "
                                + resp.statusCode()));
                    }
                    resp.handler(buf -> job.bytesDone.addAndGet(buf.length()));
                    return resp.end();
                })
                .compose(v -> {
                    job.blobsDone.incrementAndGet();
                    return next(base, queue, job);
                });
    }

    /** Stops the schedule and the client (runs under way fail). */
    public Future<Void> stop() {
        if (timer >= 0) {
            vertx.cancelTimer(timer);
        }
        return client.close();
    }
}
