package dev.registrymirror.proxy.route;

import dev.registrymirror.cache.Digest;
import dev.registrymirror.config.MirrorConfig;
import java.util.Optional;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Turns a request path (raw, never decoded) and its {@code ns} parameter into a {@link Route}, or
 * fails with a {@link RegistryError}. Nothing reaches the file system that did not pass the
 * distribution spec's grammar for names, tags and digests, none of which admits {@code %},
 * {@code ..} or an empty component.
 *
 * <p>Which upstream: containerd's {@code ?ns=<host>} first, then a first path component equal to
 * an upstream's name ({@code /v2/ghcr.io/owner/app/...}), else the default upstream. On
 * {@code docker.io}, a one-component name means {@code library/<name>}.
 */
public final class RouteParser {
    public static final int MAX_NAME_LENGTH = 255;
    private static final Pattern COMPONENT = Pattern.compile("[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*");
    /** A tag, as the distribution spec defines it. */
    public static final Pattern TAG = Pattern.compile("[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}");
    /** {@code /v2/<name>/manifests|blobs|referrers/<reference>}: the name, the endpoint, the reference. */
    public static final Pattern ENDPOINT = Pattern.compile("/v2/(.+)/(manifests|blobs|referrers)/([^/]+)");
    /** {@code /v2/<name>/tags/list}: the name. */
    public static final Pattern TAGS = Pattern.compile("/v2/(.+)/tags/list");

    private final MirrorConfig config;

    public RouteParser(MirrorConfig config) {
        this.config = config;
    }

    public Route parse(String path, String ns) {
        if (path.equals("/v2/") || path.equals("/v2")) {
            return new Route(Route.Kind.BASE, null, null, null, null, null);
        }
        if (path.length() > 4096) {
            throw new RegistryError(414, "NAME_INVALID", "request path too long");
        }
        Matcher m = ENDPOINT.matcher(path);
        if (m.matches()) {
            String name = m.group(1);
            String ref = m.group(3);
            return switch (m.group(2)) {
                case "manifests" -> {
                    // Neither a digest nor a tag: no manifest has that name. The spec's only failure for a
                    // manifest GET or HEAD is 404, and no upstream needs to be asked.
                    if (ref.indexOf(':') >= 0) {
                        if (!Digest.isValid(ref)) {
                            throw RegistryError.manifestUnknown(ref);
                        }
                        yield repo(Route.Kind.MANIFEST, name, ns, null, Digest.parse(ref));
                    }
                    if (!TAG.matcher(ref).matches()) {
                        throw RegistryError.manifestUnknown(ref);
                    }
                    yield repo(Route.Kind.MANIFEST, name, ns, ref, null);
                }
                case "blobs" -> repo(Route.Kind.BLOB, name, ns, null, digest(ref));
                default -> repo(Route.Kind.REFERRERS, name, ns, null, digest(ref));
            };
        }
        m = TAGS.matcher(path);
        if (m.matches()) {
            return repo(Route.Kind.TAGS, m.group(1), ns, null, null);
        }
        if (path.startsWith("/v2/") && path.contains("/blobs/uploads")) {
            throw RegistryError.unsupported("this is a pull-through mirror: pushes are not supported");
        }
        throw new RegistryError(404, "NAME_UNKNOWN", "no such endpoint: " + path);
    }

    private Route repo(Route.Kind kind, String name, String ns, String tag, Digest digest) {
        MirrorConfig.Upstream upstream;
        String repository = name;
        if (ns != null && !ns.isEmpty()) {
            Optional<MirrorConfig.Upstream> u = config.upstream(ns);
            if (u.isEmpty()) {
                throw new RegistryError(404, "NAME_UNKNOWN", "no upstream configured for registry " + ns);
            }
            upstream = u.get();
        } else {
            int slash = name.indexOf('/');
            Optional<MirrorConfig.Upstream> u = slash > 0 ? config.upstream(name.substring(0, slash)) : Optional.empty();
            if (u.isPresent()) {
                upstream = u.get();
                repository = name.substring(slash + 1);
            } else {
                upstream = config.defaultUpstream();
            }
        }
        if (!validName(repository)) {
            throw RegistryError.nameInvalid(name);
        }
        if (upstream.isDockerHub() && repository.indexOf('/') < 0) {
            repository = "library/" + repository;
        }
        return new Route(kind, upstream, repository, name, tag, digest);
    }

    public static boolean validName(String name) {
        if (name.isEmpty() || name.length() > MAX_NAME_LENGTH) {
            return false;
        }
        for (String component : name.split("/", -1)) {
            if (!COMPONENT.matcher(component).matches()) {
                return false;
            }
        }
        return true;
    }

    /** The digest {@code text} names, or a {@code 400 DIGEST_INVALID}. */
    public static Digest digest(String text) {
        try {
            return Digest.parse(text);
        } catch (IllegalArgumentException e) {
            throw RegistryError.digestInvalid(text);
        }
    }
}
