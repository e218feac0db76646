package dev.registrymirror.proxy.access;

import com.github.benmanes.caffeine.cache.Cache;
import com.github.benmanes.caffeine.cache.Caffeine;
import dev.registrymirror.cache.Digest;
import dev.registrymirror.cache.Storage;
import dev.registrymirror.proxy.manifest.MediaTypes;
import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.route.Route;
import dev.registrymirror.proxy.upstream.UpstreamClient;
import dev.registrymirror.proxy.vertx.Blocking;
import io.vertx.core.Future;
import io.vertx.core.MultiMap;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpMethod;
import java.util.List;
import java.util.Optional;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Storage shares content by digest, so a blob fetched for a protected repository could be asked for
 * under any other name. The index records which {@code <upstream>/<repository>} each blob and
 * manifest was fetched for (or confirmed under); a request by digest under a name that is not among
 * them is answered from the cache only if one of them is public (anyone could pull it there), and
 * otherwise only once that name's upstream confirms it has the digest ({@code HEAD}, with the
 * mirror's credentials); else it is unknown: {@code 404}. Only when some rule keeps a repository
 * from anonymous clients; without such rules nothing is checked or recorded.
 */
public final class Provenance {
    private static final Logger LOG = LoggerFactory.getLogger(Provenance.class);
    private final Storage storage;
    private final Blocking blocking;
    private final Rules rules;
    private final boolean active;
    /** (kind, digest, name) recorded lately: most answers are repeats, which need no write. */
    private final Cache<String, Boolean> recorded = Caffeine.newBuilder().maximumSize(100_000).build();

    private enum Verdict { SERVE, CONFIRM }

    /** The name a blob download under way was started for (a request joining it shares its bytes). */
    private final java.util.function.Function<Digest, String> downloading;

    Provenance(Storage storage, Blocking blocking, Rules rules, boolean active,
               java.util.function.Function<Digest, String> downloading) {
        this.downloading = downloading;
        this.storage = storage;
        this.blocking = blocking;
        this.rules = rules;
        this.active = active;
    }

    private static boolean byDigest(Route route) {
        return route.kind() == Route.Kind.BLOB || route.kind() == Route.Kind.MANIFEST && route.digest() != null;
    }

    /** Succeeds when the digest of {@code route} may be answered under its name; fails with a 404 when it is unknown there. */
    public Future<Void> check(Route route, UpstreamClient upstream) {
        if (!active || !byDigest(route)) {
            return Future.succeededFuture();
        }
        String kind = route.kind() == Route.Kind.BLOB ? "blob" : "manifest";
        String name = route.upstream().name() + "/" + route.repository();
        Digest d = route.digest();
        if (recorded.getIfPresent(kind + " " + d + " " + name) != null) {
            return Future.succeededFuture();
        }
        return blocking.run(() -> {
            Optional<Storage.Item> stored = kind.equals("blob") ? storage.blob(d) : storage.manifest(d);
            List<String> origins;
            if (stored.isEmpty()) {
                String source = kind.equals("blob") ? downloading.apply(d) : null;
                if (source == null || source.equals(name)) {
                    return Verdict.SERVE; // fetched from this name's upstream, and recorded then
                }
                origins = List.of(source); // joining a download started for another name
            } else {
                origins = storage.origins(kind, d);
            }
            if (origins.contains(name)) {
                return Verdict.SERVE;
            }
            for (String o : origins) {
                if (rules.pullers(o).contains(Identity.ANONYMOUS)) {
                    return Verdict.SERVE;
                }
            }
            return Verdict.CONFIRM;
        }).compose(v -> v == Verdict.SERVE ? Future.succeededFuture() : confirm(route, upstream, kind, name));
    }

    private Future<Void> confirm(Route route, UpstreamClient upstream, String kind, String name) {
        MultiMap headers = MultiMap.caseInsensitiveMultiMap().add(HttpHeaders.ACCEPT,
                kind.equals("blob") ? "*/*" : String.join(", ", MediaTypes.MANIFESTS));
        String path = "/v2/" + route.repository() + (kind.equals("blob") ? "/blobs/" : "/manifests/") + route.digest();
        return upstream.send(HttpMethod.HEAD, path, route.repository(), headers, kind).compose(resp -> {
            UpstreamClient.discard(resp);
            if (resp.statusCode() == 200) {
                LOG.info("access: {} {} confirmed under {} by its upstream", kind, route.digest(), name);
                return record(kind, route.digest(), name);
            }
            if (resp.statusCode() == 404 || resp.statusCode() == 401 || resp.statusCode() == 403) {
                LOG.warn("access: {} {} asked for under {}, which its upstream does not confirm ({}); answered as unknown",
                        kind, route.digest(), name, resp.statusCode());
                return Future.failedFuture(new RegistryError(404, kind.equals("blob") ? "BLOB_UNKNOWN" : "MANIFEST_UNKNOWN",
                        kind + " " + route.digest() + " not found in " + route.clientName()));
            }
            return Future.failedFuture(upstream.failure(resp, kind.equals("blob") ? "BLOB_UNKNOWN" : "MANIFEST_UNKNOWN",
                    kind + " " + route.digest()));
        });
    }

    /**
     * After an answer of the content under its name: records the name as an origin (once).
     *
     * @param answeredDigest the answer's {@code Docker-Content-Digest} (a manifest by tag), or null
     */
    public void served(Route route, String answeredDigest) {
        if (!active || route.kind() != Route.Kind.BLOB && route.kind() != Route.Kind.MANIFEST) {
            return;
        }
        Digest d = route.digest();
        if (d == null && answeredDigest != null && Digest.isValid(answeredDigest)) {
            d = Digest.parse(answeredDigest);
        }
        if (d == null) {
            return;
        }
        record(route.kind() == Route.Kind.BLOB ? "blob" : "manifest", d, route.upstream().name() + "/" + route.repository());
    }

    private Future<Void> record(String kind, Digest d, String name) {
        String key = kind + " " + d + " " + name;
        if (recorded.getIfPresent(key) != null) {
            return Future.succeededFuture();
        }
        return blocking.run(() -> {
            storage.addOrigin(kind, d, name);
            recorded.put(key, Boolean.TRUE);
            return null;
        }).otherwise(err -> {
            LOG.warn("access: cannot record that {} {} came for {}: {}", kind, d, name, err.toString());
            return null;
        }).mapEmpty();
    }
}
