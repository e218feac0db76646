package dev.registrymirror.proxy.access;

import com.github.benmanes.caffeine.cache.Cache;
import com.github.benmanes.caffeine.cache.Caffeine;
import dev.registrymirror.cache.ContentKind;
import dev.registrymirror.cache.Digest;
import dev.registrymirror.cache.Storage;
import dev.registrymirror.config.MirrorConfig;
import dev.registrymirror.proxy.manifest.MediaTypes;
import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.route.Route;
import dev.registrymirror.proxy.upstream.UpstreamClient;
import dev.registrymirror.proxy.vertx.Blocking;
import io.vertx.core.Future;
import io.vertx.core.MultiMap;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpMethod;
import java.io.IOException;
import java.util.List;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Which names content may be handed out under. Storage and downloads share content by digest, so
 * a blob fetched for a protected repository could be asked for under any other name. The index
 * records which {@code <upstream>/<repository>} each blob and manifest was fetched for (in the same
 * transaction as the item itself) or confirmed under; bytes reach a request under another name only
 * if one of those names is public (anyone could pull them there), or once that name's upstream
 * confirms it has the digest ({@code HEAD}, with the mirror's credentials). Otherwise the content
 * is unknown there: {@code 404}.
 *
 * <p>The decision is made where the bytes are handed out, never before: the blob and manifest
 * services ask {@link #mayServeStored} in the same step that finds the stored item, and a request
 * joins a download under way only through {@code InflightDownloads.join}, which asks
 * {@link #shares} inside its atomic update of the map. A decision made in one step and acted on in
 * another would leave a window in which a download or a commit for another name slips in.
 *
 * <p>Only active when some rule keeps a repository from anonymous clients; otherwise everything is
 * shared and nothing is recorded.
 */
public final class Provenance {
    private static final Logger LOG = LoggerFactory.getLogger(Provenance.class);
    /** Provenance when no rule protects anything: all content is shared, nothing checked or recorded. */
    public static final Provenance OPEN = new Provenance(null, null, null);

    private final Storage storage;
    private final Blocking blocking;
    private final Rules rules;
    /**
     * (kind, digest, name) known to be good lately: recorded, or confirmed by the name's upstream. A
     * fact about the upstream, so it stays true when the item is evicted and fetched again.
     */
    private final Cache<String, Boolean> known = Caffeine.newBuilder().maximumSize(100_000).build();

    private Provenance(Storage storage, Blocking blocking, Rules rules) {
        this.storage = storage;
        this.blocking = blocking;
        this.rules = rules;
    }

    /** Provenance for {@code access}: {@link #OPEN} unless some rule keeps a repository from anonymous clients. */
    public static Provenance of(MirrorConfig.Access access, Storage storage, Blocking blocking) {
        boolean protects = access.rules().stream().anyMatch(r -> !r.pull().contains(Identity.ANONYMOUS));
        return protects ? new Provenance(storage, blocking, new Rules(access.rules())) : OPEN;
    }

    /** Whether anything is checked and recorded. */
    public boolean active() {
        return rules != null;
    }

    /** The name content of {@code route} is fetched for and recorded under: {@code <upstream>/<repository>}. */
    public static String nameOf(Route route) {
        return route.upstream().name() + "/" + route.repository();
    }

    /** The origin to record with content fetched for {@code name}: the name when active, else null (none). */
    public String originFor(String name) {
        return active() ? name : null;
    }

    /**
     * Whether bytes fetched for {@code source} may be handed to a request under {@code name} without
     * asking that name's upstream. Never blocks: safe inside an atomic update of a map.
     */
    public boolean shares(ContentKind kind, Digest digest, String source, String name) {
        return !active() || source.equals(name) || isPublic(source) || isKnown(kind, digest, name);
    }

    /**
     * Whether the stored {@code kind} with this digest may be
     * served under {@code name}: recorded or confirmed there, or recorded under a public name. Call it
     * while the item is held (pinned, or in hand): a removed item has no origins, which only makes the
     * answer no. Blocks (reads the index).
     */
    public boolean mayServeStored(ContentKind kind, Digest digest, String name) throws IOException {
        if (!active() || isKnown(kind, digest, name)) {
            return true;
        }
        List<String> origins = storage.origins(kind, digest);
        if (origins.contains(name)) {
            known.put(key(kind, digest, name), Boolean.TRUE);
            return true;
        }
        for (String o : origins) {
            if (isPublic(o)) {
                return true;
            }
        }
        return false;
    }

    /** {@link #mayServeStored} on a worker thread. */
    public Future<Boolean> mayServeStoredAsync(ContentKind kind, Digest digest, String name) {
        if (!active() || isKnown(kind, digest, name)) {
            return Future.succeededFuture(true);
        }
        return blocking.run(() -> mayServeStored(kind, digest, name));
    }

    private boolean isPublic(String name) {
        return rules.pullers(name).contains(Identity.ANONYMOUS);
    }

    private boolean isKnown(ContentKind kind, Digest digest, String name) {
        return known.getIfPresent(key(kind, digest, name)) != null;
    }

    private static String key(ContentKind kind, Digest digest, String name) {
        return kind.label() + " " + digest + " " + name;
    }

    /**
     * Asks the upstream of {@code route} whether it has the digest under the route's name
     * ({@code HEAD}, with the mirror's credentials). Succeeds when it does (remembered, and recorded
     * when the item is stored); fails with a {@code 404} when it does not.
     */
    public Future<Void> confirm(ContentKind kind, Route route, UpstreamClient upstream) {
        MultiMap headers = MultiMap.caseInsensitiveMultiMap().add(HttpHeaders.ACCEPT,
                kind == ContentKind.BLOB ? "*/*" : String.join(", ", MediaTypes.MANIFESTS));
        String path = "/v2/" + route.repository() + (kind == ContentKind.BLOB ? "/blobs/" : "/manifests/") + route.digest();
        String name = nameOf(route);
        return upstream.send(HttpMethod.HEAD, path, route.repository(), headers, kind.label()).compose(resp -> {
            UpstreamClient.discard(resp);
            if (resp.statusCode() == 200) {
                LOG.info("access: {} {} confirmed under {} by its upstream", kind.label(), route.digest(), name);
                return confirmed(kind, route.digest(), name);
            }
            if (resp.statusCode() == 404 || resp.statusCode() == 401 || resp.statusCode() == 403) {
                LOG.warn("access: {} {} asked for under {}, which its upstream does not confirm ({}); answered as unknown",
                        kind.label(), route.digest(), name, resp.statusCode());
                return Future.failedFuture(new RegistryError(404, kind == ContentKind.BLOB ? "BLOB_UNKNOWN" : "MANIFEST_UNKNOWN",
                        kind.label() + " " + route.digest() + " not found in " + route.clientName()));
            }
            return Future.failedFuture(upstream.failure(resp, kind == ContentKind.BLOB ? "BLOB_UNKNOWN" : "MANIFEST_UNKNOWN",
                    kind.label() + " " + route.digest()));
        });
    }

    /**
     * {@code name}'s upstream said it has the digest (a confirmation, or a {@code HEAD} answered for
     * a client): remembered, and recorded as an origin if the item is stored (a row for content that
     * is not stored would outlive it).
     */
    public Future<Void> confirmed(ContentKind kind, Digest digest, String name) {
        if (!active()) {
            return Future.succeededFuture();
        }
        known.put(key(kind, digest, name), Boolean.TRUE);
        return blocking.run(() -> storage.addOrigin(kind, digest, name)).otherwise(err -> {
            LOG.warn("access: cannot record that {} {} is in {}: {}", kind.label(), digest, name, err.toString());
            return false;
        }).mapEmpty();
    }
}
