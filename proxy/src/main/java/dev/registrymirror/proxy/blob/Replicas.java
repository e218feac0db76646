package dev.registrymirror.proxy.blob;

import dev.registrymirror.proxy.upstream.Sender;

import dev.registrymirror.cache.ContentKind;
import dev.registrymirror.cache.Digest;
import dev.registrymirror.proxy.cluster.Cluster;
import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.upstream.Bodies;
import io.vertx.core.Future;
import io.vertx.core.http.HttpClientResponse;
import io.vertx.core.http.HttpMethod;
import java.net.URI;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Blob requests to the other replicas of the cluster, over the internal hop (signed with the
 * cluster's secret, carrying the client's repository name), and whom to ask for what.
 *
 * <p>There are three kinds of hop for a blob:
 * <ul>
 *   <li>{@link Ask#OWNER}: a replica that does not own the blob asks its first owner, which answers
 *       from its disk, its download under way or a new download (from the upstream);</li>
 *   <li>{@link Ask#HOLDER}: an owner about to fetch a blob asks the replicas that may hold it already
 *       (those that owned it before a membership change, the next in HRW order) to send it from their
 *       disks only: a replica that joins or returns costs no refetch;</li>
 *   <li>{@link #keepCopy}: with {@code cluster.copies} &gt; 1, the first owner, having stored a blob,
 *       tells the other owners to keep a copy (they fetch it from the first owner's disk).</li>
 * </ul>
 * A replica that answers a hop never sends one of the first kind itself, so no request goes round.
 */
final class Replicas {
    private static final Logger LOG = LoggerFactory.getLogger(Replicas.class);
    /** What a hop asks of the replica it goes to. */
    enum Ask {
        /** Answer as the owner: from the disk, a download under way, or the upstream. */
        OWNER(""),
        /** Answer from the disk only (404 otherwise): asked before the upstream by a new owner. */
        HOLDER("&held=1");

        final String query;

        Ask(String query) {
            this.query = query;
        }
    }

    /** A replica to ask for a blob before the upstream, and how. */
    record Peer(URI replica, Ask ask) {
    }

    private final Cluster cluster;
    Replicas(Cluster cluster) {
        this.cluster = cluster;
    }

    Cluster cluster() {
        return cluster;
    }

    /**
     * Whom a download of {@code digest} on this replica asks before the upstream, in order: the first
     * owner as such when this replica keeps a second copy and the download is a client's (not a hop's),
     * then the replicas that may hold it already, from their disks.
     */
    List<Peer> beforeUpstream(Digest digest, boolean mayAskOwner) {
        List<Peer> peers = new ArrayList<>(3);
        URI first = cluster.owners(ContentKind.BLOB, digest).get(0);
        if (mayAskOwner && !first.equals(cluster.self())) {
            peers.add(new Peer(first, Ask.OWNER));
        }
        for (URI holder : cluster.pastHolders(ContentKind.BLOB, digest)) {
            if (peers.stream().noneMatch(p -> p.replica().equals(holder))) {
                peers.add(new Peer(holder, Ask.HOLDER));
            }
        }
        return peers;
    }

    /**
     * Sends a blob hop to {@code replica}; the answer comes paused.
     *
     * @param range the client's {@code Range} header, or null
     */
    Future<HttpClientResponse> ask(URI replica, HttpMethod method, String upstream, String repository, Digest digest,
                                   Ask ask, String range) {
        String uri = "/v2/" + repository + "/blobs/" + digest + "?ns=" + URLEncoder.encode(upstream,
                StandardCharsets.UTF_8) + ask.query;
        return cluster.send(replica, method, uri, range == null ? null
                : io.vertx.core.MultiMap.caseInsensitiveMultiMap().add("Range", range));
    }

    /**
     * Tells the other owners of a blob this replica (its first owner) has just stored to keep a copy
     * too; each fetches it from here. Failures are logged: the copy is a spare, the blob is stored.
     */
    void keepCopies(Digest digest, String upstream, String repository) {
        List<URI> owners = cluster.owners(ContentKind.BLOB, digest);
        if (owners.size() < 2 || !owners.get(0).equals(cluster.self())) {
            return;
        }
        for (URI other : owners.subList(1, owners.size())) {
            keepCopy(other, digest, upstream, repository);
        }
    }

    private void keepCopy(URI replica, Digest digest, String upstream, String repository) {
        String uri = "/v2/" + repository + "/blobs/" + digest + "?ns=" + URLEncoder.encode(upstream,
                StandardCharsets.UTF_8) + "&keep=1";
        cluster.send(replica, HttpMethod.POST, uri, null).onComplete(ar -> {
            if (ar.succeeded()) {
                Bodies.discard(ar.result());
                if (ar.result().statusCode() >= 300) {
                    LOG.warn("cluster: {} did not take a copy of blob {} (HTTP {})", replica, digest,
                            ar.result().statusCode());
                }
            } else {
                LOG.warn("cluster: could not ask {} to keep a copy of blob {}: {}", replica, digest,
                        ar.cause().toString());
            }
        });
    }

    /** The error a replica answered, as this replica's own. */
    Future<RegistryError> error(URI replica, HttpClientResponse in) {
        return cluster.error(replica, in);
    }

    /** A replica as the sender of a streamed body. */
    Sender sender(URI replica) {
        return cluster.sender(replica);
    }
}
