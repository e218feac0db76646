package dev.registrymirror.proxy.manifest;

import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;

/** Manifest media types and the {@code Accept} rules for them. */
public final class MediaTypes {
    public static final String OCI_INDEX = "application/vnd.oci.image.index.v1+json";
    public static final String OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
    public static final String DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
    public static final String DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
    /** What the mirror asks upstreams for, so one cached answer serves every modern client. */
    public static final List<String> MANIFESTS = List.of(OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST);

    private MediaTypes() {
    }

    /**
     * The media types a client's {@code Accept} headers name, without parameters; empty when the
     * client accepts anything (no header, or a wildcard).
     */
    public static Set<String> accepted(List<String> acceptHeaders) {
        Set<String> types = new LinkedHashSet<>();
        for (String header : acceptHeaders) {
            for (String part : header.split(",")) {
                int semi = part.indexOf(';');
                String type = (semi >= 0 ? part.substring(0, semi) : part).trim().toLowerCase(Locale.ROOT);
                if (type.equals("*/*") || type.equals("application/*")) {
                    return Set.of();
                }
                if (!type.isEmpty()) {
                    types.add(type);
                }
            }
        }
        return types;
    }

    /** Whether a manifest of {@code mediaType} may go to a client that accepts {@code accepted}. */
    public static boolean allows(Set<String> accepted, String mediaType) {
        if (accepted.isEmpty()) {
            return true;
        }
        int semi = mediaType.indexOf(';');
        String bare = (semi >= 0 ? mediaType.substring(0, semi) : mediaType).trim().toLowerCase(Locale.ROOT);
        return accepted.contains(bare);
    }

    /** The {@code Accept} header for an upstream request: the standard types plus the client's own. */
    public static String upstreamAccept(Set<String> clientAccepted) {
        Set<String> all = new LinkedHashSet<>(MANIFESTS);
        all.addAll(clientAccepted);
        return String.join(", ", all);
    }
}
