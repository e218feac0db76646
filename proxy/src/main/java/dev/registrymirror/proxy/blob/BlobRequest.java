package dev.registrymirror.proxy.blob;

import dev.registrymirror.cache.Digest;
import dev.registrymirror.proxy.route.Route;
import dev.registrymirror.proxy.upstream.UpstreamClient;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.HttpServerRequest;

/**
 * One blob request as it walks the chain of sources, and what it has established on the way.
 *
 * @param name      {@code <upstream>/<repository>}: the name the bytes are asked for under
 * @param attempt   how many times the walk started again from the first source
 * @param confirmed the name's upstream said it has the digest: any stored copy or download may serve it
 * @param ownOnly   another name's download failed this request: from now on only its own name's
 * @param hop       null for a client's request; what another replica asks of this one ({@link
 *                  Replicas.Ask}): never forwarded again
 */
record BlobRequest(Route route, UpstreamClient upstream, HttpServerRequest req, String name, int attempt,
                   boolean confirmed, boolean ownOnly, Replicas.Ask hop) {
    /** Another replica asks: this one answers from its own chain, down to its upstream, never hopping again. */
    boolean fromReplica() {
        return hop != null;
    }

    /** Another replica asks for what this one holds on its disk: no download is joined or started. */
    boolean holderOnly() {
        return hop == Replicas.Ask.HOLDER;
    }

    boolean head() {
        return req.method() == HttpMethod.HEAD;
    }

    Digest digest() {
        return route.digest();
    }

    /** The same request, walking again from the first source. */
    BlobRequest again() {
        return new BlobRequest(route, upstream, req, name, attempt + 1, confirmed, ownOnly, hop);
    }

    BlobRequest confirmedNow() {
        return new BlobRequest(route, upstream, req, name, attempt, true, ownOnly, hop);
    }

    BlobRequest ownOnlyNow() {
        return new BlobRequest(route, upstream, req, name, attempt, confirmed, true, hop);
    }
}
