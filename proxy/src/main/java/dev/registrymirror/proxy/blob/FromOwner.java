package dev.registrymirror.proxy.blob;

import dev.registrymirror.cache.ContentKind;
import dev.registrymirror.cache.Digest;
import dev.registrymirror.metrics.MirrorMetrics;
import dev.registrymirror.proxy.cluster.Cluster;
import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.upstream.Bodies;
import dev.registrymirror.proxy.vertx.Owner;
import io.vertx.core.Future;
import io.vertx.core.Vertx;
import io.vertx.core.http.HttpClientResponse;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.HttpServerResponse;
import java.net.URI;
import java.util.List;

/**
 * The third source, in a cluster: the replica that owns the blob. A replica that is not among the
 * blob's owners ({@code cluster.copies} of them) keeps no copy: it asks the owner over the internal
 * hop (signed with the cluster's secret, carrying the client's repository name, so provenance and the
 * owner's access to its upstream hold) and streams the answer to the client as it arrives, checking
 * it against the digest, its end held back until it matches: an owner that dies mid-stream leaves the
 * client a broken connection, never a short body that looks whole. A hop is never forwarded again:
 * the owner answers from its own chain, down to its upstream, whatever it thinks of ownership. When
 * the owner cannot be reached, this replica goes to the upstream itself (its view of the members is
 * behind); once the membership has noticed, requests go to the new owner.
 */
final class FromOwner implements BlobSource {
    private final Vertx vertx;
    private final Replicas replicas;
    private final Cluster cluster;
    private final InflightDownloads downloads;
    private final MirrorMetrics metrics;

    FromOwner(Vertx vertx, Replicas replicas, InflightDownloads downloads, MirrorMetrics metrics) {
        this.vertx = vertx;
        this.replicas = replicas;
        this.cluster = replicas.cluster();
        this.downloads = downloads;
        this.metrics = metrics;
    }

    @Override
    public Future<Step> answer(BlobRequest r) {
        if (r.fromReplica()) {
            return Future.succeededFuture(Step.NEXT);
        }
        List<URI> owners = cluster.owners(ContentKind.BLOB, r.digest());
        if (owners.contains(cluster.self())) {
            return Future.succeededFuture(Step.NEXT); // an owner keeps a copy: its download asks the first owner
        }
        return ask(r, owners.get(0));
    }

    private Future<Step> ask(BlobRequest r, URI owner) {
        HttpMethod method = r.head() ? HttpMethod.HEAD : HttpMethod.GET;
        Owner loop = Owner.current();
        return replicas.ask(owner, method, r.route().upstream().name(), r.route().repository(), r.digest(),
                Replicas.Ask.OWNER, r.req().getHeader("Range")).transform(ar -> {
            if (ar.failed()) {
                cluster.unreachable(owner, ar.cause(), "its blobs are fetched here meanwhile");
                return Future.succeededFuture(Step.NEXT);
            }
            HttpClientResponse in = ar.result();
            int status = in.statusCode();
            if (status == 200 || status == 206) {
                return stream(r, owner, in, loop).map(Step.ANSWERED);
            }
            return replicas.error(owner, in).compose(Future::failedFuture);
        });
    }

    /** The owner's answer, streamed to the client: a 200 checked against the digest, a 206 by its length. */
    private Future<Void> stream(BlobRequest r, URI owner, HttpClientResponse in, Owner loop) {
        HttpServerResponse out = r.req().response();
        Digest digest = r.digest();
        BlobService.blobHeaders(out.headers(), digest);
        boolean partial = in.statusCode() == 206;
        out.setStatusCode(in.statusCode());
        if (partial && in.getHeader(HttpHeaders.CONTENT_RANGE) != null) {
            out.putHeader(HttpHeaders.CONTENT_RANGE, in.getHeader(HttpHeaders.CONTENT_RANGE));
        }
        long length = Bodies.length(in);
        if (length >= 0) {
            out.putHeader(HttpHeaders.CONTENT_LENGTH, Long.toString(length));
        } else if (!r.head()) {
            out.setChunked(true);
        }
        if (r.head()) {
            Bodies.discard(in);
            return out.end();
        }
        Fetch.Settings f = downloads.settings();
        long max = length >= 0 ? length : f.maxBlobSize();
        UpstreamBody body = new UpstreamBody(loop, vertx, in, replicas.sender(owner), partial ? null : digest,
                "blob " + digest + " from its owner " + owner, length, UpstreamBody.Limit.fixed(max, received ->
                new RegistryError(502, "UNAVAILABLE", "the owner " + owner + " sent more than " + max + " bytes")),
                f.budget());
        return Pump.pipe(body, new ClientSink(out, metrics));
    }
}
