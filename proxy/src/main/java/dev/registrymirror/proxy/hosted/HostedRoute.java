package dev.registrymirror.proxy.hosted;

import dev.registrymirror.cache.Digest;
import dev.registrymirror.config.MirrorConfig;
import dev.registrymirror.proxy.route.RegistryError;
import dev.registrymirror.proxy.route.RouteParser;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A request for a hosted repository, parsed: which endpoint, the repository's name as the client
 * pushes it ({@code team/app}), and the reference. Names, tags and digests pass the distribution
 * spec's grammar before anything reaches the disk or the database.
 *
 * @param uploadId the upload's id, for {@link Kind#UPLOAD}
 */
public record HostedRoute(Kind kind, String name, String tag, Digest digest, String uploadId) {

    public enum Kind {
        UPLOADS("upload"), UPLOAD("upload"), BLOB("blob"), MANIFEST("manifest"), TAGS("tags"), REFERRERS("referrers");

        /** The metrics label of requests of this kind. */
        public final String label;

        Kind(String label) {
            this.label = label;
        }
    }

    private static final Pattern UPLOADS = Pattern.compile("/v2/(.+)/blobs/uploads/?");
    private static final Pattern UPLOAD = Pattern.compile("/v2/(.+)/blobs/uploads/([A-Za-z0-9-]{1,64})");

    /**
     * The hosted route of {@code path}, or null when the path is not about a hosted repository (or not
     * a registry endpoint): the mirror's own parser takes it then. {@code ns} (containerd's upstream
     * parameter) naming a configured upstream makes the request that upstream's.
     */
    public static HostedRoute parse(MirrorConfig config, String path, String ns) {
        if (config.hosted() == null || ns != null && !ns.isEmpty() && config.upstream(ns).isPresent()) {
            return null;
        }
        Matcher m = UPLOADS.matcher(path);
        if (m.matches() && hosted(config, m.group(1))) {
            return new HostedRoute(Kind.UPLOADS, m.group(1), null, null, null);
        }
        m = UPLOAD.matcher(path);
        if (m.matches() && hosted(config, m.group(1))) {
            return new HostedRoute(Kind.UPLOAD, m.group(1), null, null, m.group(2));
        }
        m = RouteParser.TAGS.matcher(path);
        if (m.matches() && hosted(config, m.group(1))) {
            return new HostedRoute(Kind.TAGS, m.group(1), null, null, null);
        }
        m = RouteParser.ENDPOINT.matcher(path);
        if (!m.matches() || !hosted(config, m.group(1))) {
            return null;
        }
        String name = m.group(1);
        String ref = m.group(3);
        return switch (m.group(2)) {
            case "manifests" -> {
                if (ref.indexOf(':') >= 0) {
                    yield new HostedRoute(Kind.MANIFEST, name, null, RouteParser.digest(ref), null);
                }
                if (!RouteParser.TAG.matcher(ref).matches()) {
                    throw new RegistryError(400, "TAG_INVALID", "\"" + ref + "\" is not a tag");
                }
                yield new HostedRoute(Kind.MANIFEST, name, ref, null, null);
            }
            case "blobs" -> new HostedRoute(Kind.BLOB, name, null, RouteParser.digest(ref), null);
            default -> new HostedRoute(Kind.REFERRERS, name, null, RouteParser.digest(ref), null);
        };
    }

    /** Whether {@code name} is a valid repository name that a hosted glob takes. */
    private static boolean hosted(MirrorConfig config, String name) {
        if (!config.isHosted(name)) {
            return false;
        }
        if (!RouteParser.validName(name)) {
            throw RegistryError.nameInvalid(name);
        }
        return true;
    }

    /** The reference as it appears in a URL: the tag, or the digest. */
    public String reference() {
        return tag != null ? tag : digest.toString();
    }
}
