package dev.registrymirror.proxy.route;

import dev.registrymirror.cache.Digest;
import dev.registrymirror.config.MirrorConfig;

/**
 * A parsed, validated registry API request.
 *
 * @param kind       which endpoint
 * @param upstream   the upstream it goes to ({@code null} for {@link Kind#BASE})
 * @param repository the repository name as the upstream knows it ({@code library/alpine})
 * @param clientName the repository name as the client wrote it, prefix included
 * @param tag        the tag, for a manifest by tag
 * @param digest     the digest, for a manifest or blob by digest and for referrers
 */
public record Route(Kind kind, MirrorConfig.Upstream upstream, String repository, String clientName, String tag,
             Digest digest) {

    public enum Kind {
        BASE("base"), MANIFEST("manifest"), BLOB("blob"), TAGS("tags"), REFERRERS("referrers");

        public final String label;

        Kind(String label) {
            this.label = label;
        }
    }

    /** The reference as it appears in a URL: the tag, or the digest. */
    public String reference() {
        return tag != null ? tag : digest.toString();
    }
}
