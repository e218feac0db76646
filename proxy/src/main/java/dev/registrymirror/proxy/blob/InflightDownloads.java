package dev.registrymirror.proxy.blob;

import dev.registrymirror.cache.BlobStore;
import dev.registrymirror.cache.Digest;
import dev.registrymirror.metrics.MirrorMetrics;
import dev.registrymirror.proxy.upstream.UpstreamClient;
import dev.registrymirror.proxy.vertx.Blocking;
import dev.registrymirror.proxy.vertx.Owner;
import io.netty.buffer.ByteBufAllocator;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.Vertx;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentMap;

/**
 * The blob downloads under way, at most one per digest: the first request for an uncached blob
 * starts one ({@link Fetch}, owned by that request's event loop), every concurrent request for it
 * joins it. This is what the reference proxy lacks (its {@code inflight} map has a "TODO … reuse").
 * A download leaves this map only after its commit (or failure).
 */
public final class InflightDownloads {
    private final Fetch.Settings settings;
    private final BlobStore store;
    private final ConcurrentMap<Digest, Download> downloads = new ConcurrentHashMap<>();
    private final MemoryBudget memory;
    private volatile boolean stopping;
    private final Promise<Void> ended = Promise.promise();

    /**
     * @param memoryLimit the bytes transfers may hold in memory ({@code server.downloadMemory}); -1 for an
     *                    eighth of the heap (Java's default cap on direct memory is the heap size), 16-256 MiB
     * @param maxBlobSize {@code storage.maxBlobSize}
     * @param minFree     {@code storage.minFree}
     */
    public InflightDownloads(Vertx vertx, Blocking blocking, BlobStore store, MirrorMetrics metrics, long memoryLimit,
                             ByteBufAllocator allocator, long maxBlobSize, long minFree) {
        this.store = store;
        this.memory = new MemoryBudget(memoryLimit >= 0 ? memoryLimit
                : Math.min(256L << 20, Math.max(16L << 20, Runtime.getRuntime().maxMemory() / 8)));
        this.settings = new Fetch.Settings(vertx, blocking, store, metrics, memory, allocator, maxBlobSize, minFree);
        metrics.downloadsInFlight(downloads::size);
        metrics.downloadMemory(memory::used, memory.limit);
    }

    /** What every fetch shares (for readers and pass-through streams). */
    Fetch.Settings settings() {
        return settings;
    }

    /**
     * The size of the blob being downloaded with this digest, once the upstream has announced it (or
     * all of it is verified); -1 when there is no such download, its size is not known yet, or it failed.
     */
    long announcedSize(Digest digest) {
        Download d = downloads.get(digest);
        if (d == null) {
            return -1;
        }
        Download.Snapshot s = d.snapshot();
        return s.state() == Download.State.FAILED ? -1 : s.size();
    }

    /**
     * A download under way as the status page shows it.
     *
     * @param source  {@code upstream/repository} it was first asked for
     * @param bytes   bytes received so far
     * @param size    the blob's size once the upstream announced it, else -1
     * @param seconds since it started
     */
    public record Progress(String digest, String source, long bytes, long size, double seconds) {
    }

    /** The downloads under way now, longest-running first. */
    public java.util.List<Progress> progress() {
        long now = System.nanoTime();
        return downloads.values().stream()
                .sorted(java.util.Comparator.comparingLong((Download d) -> d.startedNanos))
                .map(d -> {
                    Download.Snapshot s = d.snapshot();
                    return new Progress(d.digest.toString(), d.source, s.available(), s.size(),
                            (now - d.startedNanos) / 1e9);
                })
                .toList();
    }

    /** The {@code upstream/repository} a download under way of {@code digest} was started for; null if none. */
    public String sourceOf(Digest digest) {
        Download d = downloads.get(digest);
        return d == null ? null : d.source;
    }

    /** Downloads under way now. */
    public int size() {
        return downloads.size();
    }

    /**
     * Stops every download under way (the mirror is stopping); their waiting readers fail. A download
     * that has every byte is not stopped: it finishes its writes and its commit, so that a blob a client
     * was served is not lost. The future completes once no download is left.
     */
    public Future<Void> abandonAll() {
        stopping = true;
        for (Download d : downloads.values()) {
            d.cancel();
        }
        if (downloads.isEmpty()) {
            ended.tryComplete();
        }
        return ended.future();
    }

    /** {@code d} has ended (stored, or failed): it leaves the map. */
    private void remove(Download d) {
        downloads.remove(d.digest, d);
        if (stopping && downloads.isEmpty()) {
            ended.tryComplete();
        }
    }

    /**
     * The download of {@code digest}, started now from {@code upstream} unless one is under way (the
     * calling event loop then owns it); null when the blob was committed since the caller looked it up
     * (a download leaves this map only after its commit, so this check cannot miss one that just ended).
     */
    Download join(Digest digest, UpstreamClient upstream, String repository) {
        Owner owner = Owner.current();
        boolean[] started = {false};
        Download d = downloads.computeIfAbsent(digest, k -> {
            if (store.knownPresent(k)) {
                return null;
            }
            started[0] = true;
            return new Download(k, owner, memory, upstream.name() + "/" + repository);
        });
        if (started[0]) {
            new Fetch(settings, d, owner, upstream, repository, this::remove).start(stopping);
        }
        return d;
    }
}
