package dev.registrymirror.proxy.blob;

import dev.registrymirror.cache.BlobStore;
import dev.registrymirror.cache.ContentKind;
import dev.registrymirror.cache.Digest;
import dev.registrymirror.metrics.MirrorMetrics;
import dev.registrymirror.proxy.access.Provenance;
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
    private final Provenance provenance;
    private volatile boolean stopping;
    private final Promise<Void> ended = Promise.promise();

    /**
     * @param memoryLimit the bytes transfers may hold in memory ({@code server.downloadMemory}); -1 for an
     *                    eighth of the heap (Java's default cap on direct memory is the heap size), 16-256 MiB
     * @param maxBlobSize {@code storage.maxBlobSize}
     * @param minFree     {@code storage.minFree}
     * @param provenance  which names may share a download started for another
     * @param cluster     the replicas this one forms one cache with (asked before the upstream); null alone
     */
    public InflightDownloads(Vertx vertx, Blocking blocking, BlobStore store, MirrorMetrics metrics, long memoryLimit,
                             ByteBufAllocator allocator, long maxBlobSize, long minFree, Provenance provenance,
                             dev.registrymirror.proxy.cluster.Cluster cluster) {
        this.store = store;
        this.provenance = provenance;
        this.memory = new MemoryBudget(memoryLimit >= 0 ? memoryLimit
                : Math.min(256L << 20, Math.max(16L << 20, Runtime.getRuntime().maxMemory() / 8)));
        this.settings = new Fetch.Settings(vertx, blocking, store, metrics, memory, allocator, maxBlobSize, minFree,
                cluster == null ? null : new Replicas(cluster));
        metrics.downloadsInFlight(downloads::size);
        metrics.downloadMemory(memory::used, memory.limit);
    }

    /** What every fetch shares (for readers and pass-through streams). */
    Fetch.Settings settings() {
        return settings;
    }

    /**
     * The size of the blob being downloaded with this digest, once the upstream has announced it (or
     * all of it is verified), if its bytes may be handed to a request under {@code name} (see
     * {@link Provenance#shares}); -1 when there is no such download, its size is not known yet, it
     * failed, or it was started for a name whose bytes this one may not have.
     */
    long announcedSize(Digest digest, String name) {
        Download d = downloads.get(digest);
        if (d == null || !provenance.shares(ContentKind.BLOB, digest, d.source, name)) {
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

    /** Downloads under way now. */
    /** The most memory blob transfers have held at once, in bytes (see {@link MemoryBudget}). */
    public long memoryPeak() {
        return settings.budget().peak();
    }

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

    /** What {@link #join} did. */
    enum Outcome {
        /** A new download was started for the caller's name. */
        STARTED,
        /** None under way (and none started: the caller only looked). */
        NONE,
        /** The caller joined the download under way. */
        JOINED,
        /** The blob was committed since the caller looked it up: look in the store again. */
        STORED,
        /**
         * A download for another name is under way whose bytes the caller's name may not have until its
         * upstream confirms the digest ({@link Provenance#confirm}); then ask again, confirmed.
         */
        UNCONFIRMED
    }

    /** The answer of {@link #join}: the download to read (started or joined), else null. */
    record Joined(Outcome outcome, Download download) {
    }

    /**
     * How a request for a blob meets the download of its digest: it joins the one under way if its
     * bytes may be handed to the request's name, else starts one (owned by the calling event loop).
     * The decision is taken inside the map's atomic update, so no download or commit can slip in
     * between the decision and the join.
     *
     * <ul>
     *   <li>A download for the same name is always joined.</li>
     *   <li>One for another name is joined when {@link Provenance#shares} says its bytes may go to this
     *       name, or the request is {@code confirmed} (this name's upstream has the digest); else
     *       {@link Outcome#UNCONFIRMED}.</li>
     *   <li>With {@code ownOnly} (another name's download failed this request), only a download for
     *       this name is joined: otherwise one is started for it, and takes the map's slot. The other
     *       goes on for its own readers.</li>
     *   <li>A failed download is never joined: a new one takes its place.</li>
     *   <li>With none under way: {@link Outcome#STORED} when the blob was committed moments ago (a
     *       download leaves this map only after its commit, so this cannot miss one that just ended),
     *       else a new download, or {@link Outcome#NONE} when {@code start} is false.</li>
     * </ul>
     *
     * @param repository the repository as the request names it, upstream of {@code upstream}
     * @param start      whether to start a download when none may be joined
     * @param mayAskOwner whether a download started here may ask the blob's first owner (in a cluster,
     *                   this replica keeping a second copy): false when another replica asks, so that no
     *                   request goes round
     */
    Joined join(Digest digest, UpstreamClient upstream, String repository, boolean confirmed, boolean ownOnly,
                boolean start, boolean mayAskOwner) {
        Owner owner = Owner.current();
        String name = upstream.name() + "/" + repository;
        Outcome[] outcome = {null};
        Download d = downloads.compute(digest, (k, old) -> {
            if (old != null && !old.failedAlready()) {
                if (old.source.equals(name)
                        || !ownOnly && (confirmed || provenance.shares(ContentKind.BLOB, k, old.source, name))) {
                    outcome[0] = Outcome.JOINED;
                    return old;
                }
                if (!ownOnly) {
                    outcome[0] = Outcome.UNCONFIRMED;
                    return old;
                }
            } else if (store.knownPresent(k)) {
                outcome[0] = Outcome.STORED;
                return null; // a failed download leaves with it
            }
            if (!start) {
                outcome[0] = Outcome.NONE;
                return old;
            }
            outcome[0] = Outcome.STARTED;
            return new Download(k, owner, memory, name);
        });
        if (outcome[0] == Outcome.STARTED) {
            new Fetch(settings, d, owner, upstream, repository, provenance.originFor(name), mayAskOwner, this::remove)
                    .start(stopping);
        }
        return new Joined(outcome[0], outcome[0] == Outcome.STARTED || outcome[0] == Outcome.JOINED ? d : null);
    }
}
