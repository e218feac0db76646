package dev.registrymirror.config;

import java.net.URI;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
import java.util.regex.Pattern;

/**
 * The whole configuration of one mirror instance, validated. Built by {@link ConfigLoader}.
 *
 * @param server    the listening side
 * @param storage   where blobs, manifests and tags are kept
 * @param upstreams the registries this mirror pulls from; the first one is the default
 * @param prefetch  images fetched at start-up (and on a schedule) before any client asks
 * @param admin     the admin API; {@link Admin#OFF} unless a token is configured
 * @param access    who may pull what
 * @param cluster   the replicas this one forms one cache with; {@code null}: it runs alone
 * @param hosted    repositories whose images are pushed here and served from local storage only;
 *                  {@code null}: none (every push is refused)
 */
public record MirrorConfig(Server server, Storage storage, List<Upstream> upstreams, List<Prefetch> prefetch,
                           Admin admin, Access access, Cluster cluster, Hosted hosted) {

    public MirrorConfig(Server server, Storage storage, List<Upstream> upstreams, List<Prefetch> prefetch, Admin admin,
                        Access access, Cluster cluster) {
        this(server, storage, upstreams, prefetch, admin, access, cluster, null);
    }

    /** The same configuration with {@code hosted} repositories (null: none). */
    public MirrorConfig withHosted(Hosted hosted) {
        return new MirrorConfig(server, storage, upstreams, prefetch, admin, access, cluster, hosted);
    }

    /**
     * Whether {@code name} (a repository name as the client writes it, {@code team/app}) is a hosted
     * repository: pushed here, never fetched from an upstream.
     */
    public boolean isHosted(String name) {
        return hosted != null && hosted.matches(name);
    }

    public MirrorConfig(Server server, Storage storage, List<Upstream> upstreams, List<Prefetch> prefetch, Admin admin,
                        Access access) {
        this(server, storage, upstreams, prefetch, admin, access, null);
    }

    public MirrorConfig(Server server, Storage storage, List<Upstream> upstreams, List<Prefetch> prefetch, Admin admin) {
        this(server, storage, upstreams, prefetch, admin, Access.OPEN);
    }

    public MirrorConfig(Server server, Storage storage, List<Upstream> upstreams) {
        this(server, storage, upstreams, List.of());
    }

    public MirrorConfig(Server server, Storage storage, List<Upstream> upstreams, List<Prefetch> prefetch) {
        this(server, storage, upstreams, prefetch, Admin.OFF);
    }

    public MirrorConfig {
        upstreams = List.copyOf(upstreams);
        prefetch = List.copyOf(prefetch);
        admin = admin == null ? Admin.OFF : admin;
        access = access == null ? Access.OPEN : access;
        if (upstreams.isEmpty()) {
            throw new ConfigException("upstreams: at least one upstream is required");
        }
    }

    /**
     * An image to fetch before clients ask for it.
     *
     * @param upstream   the name of the upstream it comes from
     * @param repository the repository there ({@code library/alpine})
     * @param tag        the tag
     * @param platforms  {@code os/arch[/variant]} to fetch of an index; empty for all
     * @param every      how often the tag is resolved again and what changed fetched; {@code null}: only at start-up
     */
    public record Prefetch(String upstream, String repository, String tag, List<String> platforms, Duration every) {
        public Prefetch {
            platforms = List.copyOf(platforms);
        }

        /** {@code <upstream>/<repository>:<tag>}, as configured. */
        public String image() {
            return upstream + "/" + repository + ":" + tag;
        }

        private static final Pattern REPOSITORY =
                Pattern.compile("[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*");
        private static final Pattern TAG = Pattern.compile("[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}");
        private static final Pattern PLATFORM = Pattern.compile("[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?");

        /**
         * Reads {@code <upstream name>/<repository>:<tag>} ({@code docker.io/alpine:3.19} is
         * {@code library/alpine} on Docker Hub), checked against the configured upstreams.
         *
         * @throws IllegalArgumentException saying what is wrong, without naming a key (the caller does)
         */
        public static Prefetch parse(String image, List<String> platforms, Duration every, List<Upstream> upstreams) {
            if (image == null || image.isBlank()) {
                throw new IllegalArgumentException("required, e.g. docker.io/library/alpine:3.19");
            }
            int slash = image.indexOf('/');
            int colon = image.lastIndexOf(':');
            if (slash <= 0 || colon < slash) {
                throw new IllegalArgumentException("\"" + image + "\" is not <upstream name>/<repository>:<tag>"
                        + " (e.g. docker.io/library/alpine:3.19)");
            }
            String name = image.substring(0, slash);
            Upstream upstream = upstreams.stream().filter(u -> u.name().equalsIgnoreCase(name)).findFirst()
                    .orElseThrow(() -> new IllegalArgumentException("\"" + image + "\" names upstream \"" + name
                            + "\", which is not configured (upstreams: " + String.join(", ",
                            upstreams.stream().map(Upstream::name).toList()) + ")"));
            String repository = image.substring(slash + 1, colon);
            String tag = image.substring(colon + 1);
            if (upstream.isDockerHub() && !repository.contains("/")) {
                repository = "library/" + repository;
            }
            if (!REPOSITORY.matcher(repository).matches()) {
                throw new IllegalArgumentException("\"" + image + "\": \"" + repository + "\" is not a repository name");
            }
            if (!TAG.matcher(tag).matches()) {
                throw new IllegalArgumentException("\"" + image + "\": \"" + tag + "\" is not a tag");
            }
            platforms.forEach(Prefetch::checkPlatform);
            return new Prefetch(upstream.name(), repository, tag, platforms, every);
        }

        /** @throws IllegalArgumentException unless {@code platform} is {@code os/arch[/variant]} */
        public static void checkPlatform(String platform) {
            if (platform == null || !PLATFORM.matcher(platform).matches()) {
                throw new IllegalArgumentException("\"" + platform
                        + "\" is not <os>/<architecture>[/<variant>] (e.g. linux/arm64/v8)");
            }
        }
    }

    /**
     * Who may pull what.
     *
     * @param users    htpasswd file of bcrypt entries, read again when it changes; {@code null}: no users
     * @param networks CIDR blocks clients must come from; empty: any
     * @param rules    first match wins; empty: everyone pulls everything
     * @param metrics  who may read {@code /metrics}, the status page and {@code /status.json}; {@code null}: everyone
     * @param admin    who may call the admin API, besides presenting its token; {@code null}: everyone with the token
     * @param requestsPerSecond requests a second one client (user, else address) may make; 0: no limit
     * @param upstreamFetchesPerMinute upstream GETs a minute one client's requests may cause; 0: no limit
     * @param tokenKey the secret the mirror's tokens are signed with, shared by replicas; {@code null}: one made at start
     * @param failedLoginsPerMinute wrong passwords (or unknown users) one address may send a minute before its
     *                 password checks are refused with 429, without hashing
     */
    public record Access(Path users, List<String> networks, List<Rule> rules, List<String> metrics, List<String> admin,
                         int requestsPerSecond, int upstreamFetchesPerMinute, String tokenKey, int failedLoginsPerMinute) {
        /** {@code access.failedLoginsPerMinute} unless set. */
        public static final int DEFAULT_FAILED_LOGINS_PER_MINUTE = 10;
        public static final Access OPEN = new Access(null, List.of(), List.of(), null, null, 0, 0, null,
                DEFAULT_FAILED_LOGINS_PER_MINUTE);

        @Override
        public String toString() {
            return "Access[users=" + users + ", networks=" + networks + ", rules=" + rules + ", metrics=" + metrics
                    + ", admin=" + admin + ", requestsPerSecond=" + requestsPerSecond + ", upstreamFetchesPerMinute="
                    + upstreamFetchesPerMinute + ", tokenKey=" + (tokenKey == null ? "none" : "(set)")
                    + ", failedLoginsPerMinute=" + failedLoginsPerMinute + "]";
        }

        public Access {
            networks = List.copyOf(networks);
            rules = List.copyOf(rules);
            metrics = metrics == null ? null : List.copyOf(metrics);
            admin = admin == null ? null : List.copyOf(admin);
        }

        /** Whether anything is restricted (else requests are not even looked at). */
        public boolean restricts() {
            return users != null || !networks.isEmpty() || !rules.isEmpty() || metrics != null || admin != null
                    || requestsPerSecond > 0 || upstreamFetchesPerMinute > 0;
        }
    }

    /**
     * @param repositories {@code <upstream name>/<repository>} globs: {@code *} within a path component,
     *                     {@code **} across them
     * @param pull         user or client-certificate names, {@code authenticated} (any of them), or
     *                     {@code anonymous} (everyone, with credentials or without)
     */
    /**
     * @param push who may push to the matching repositories (hosted ones only); nobody when empty
     */
    public record Rule(List<String> repositories, List<String> pull, List<String> push) {
        public Rule {
            repositories = List.copyOf(repositories);
            pull = List.copyOf(pull);
            push = List.copyOf(push);
        }

        public Rule(List<String> repositories, List<String> pull) {
            this(repositories, pull, List.of());
        }
    }

    /**
     * Several replicas as one cache: membership, and who owns which content.
     *
     * @param name             replicas with the same name and secret form one cluster
     * @param secret           shared by the replicas (at least 32 characters): membership and the internal
     *                         hop need it; never logged
     * @param bindHost         the address this replica's membership listens on
     * @param bindPort         its port
     * @param members          {@code host:port} of the replicas' membership addresses (a static list), or empty
     * @param dns              a DNS name whose A records are the replicas (a Kubernetes headless service), or null
     * @param dnsServer        {@code host:port} of the DNS server to ask for {@code dns}; null for the system's
     * @param url              this replica's registry API as the others reach it
     * @param copies           replicas that keep each piece of content (1: its owner only)
     * @param failureDetection how soon a silent replica is taken out of the cluster
     */
    public record Cluster(String name, String secret, String bindHost, int bindPort, List<String> members, String dns,
                          String dnsServer, URI url, int copies, Duration failureDetection) {
        public Cluster {
            members = List.copyOf(members);
        }

        @Override
        public String toString() {
            return "Cluster[name=" + name + ", secret=(set), bind=" + bindHost + ":" + bindPort + ", members=" + members
                    + ", dns=" + dns + (dnsServer == null ? "" : " at " + dnsServer) + ", url=" + url + ", copies=" + copies + ", failureDetection=" + failureDetection + "]";
        }
    }

    /**
     * The admin API (prefetch jobs, the cache's contents, removals).
     *
     * @param token the bearer token every call must present; {@code null}: the API is off
     */
    public record Admin(String token) {
        public static final Admin OFF = new Admin(null);

        public boolean enabled() {
            return token != null;
        }

        @Override
        public String toString() {
            return enabled() ? "Admin[token=(set)]" : "Admin[off]";
        }
    }

    /** The upstream used when a request names none. */
    public Upstream defaultUpstream() {
        return upstreams.get(0);
    }

    /** The upstream whose {@code name} is {@code name}, ignoring case. */
    public Optional<Upstream> upstream(String name) {
        return upstreams.stream().filter(u -> u.name().equalsIgnoreCase(name)).findFirst();
    }

    /**
     * @param host                    address to bind, {@code 0.0.0.0} for all interfaces
     * @param port                    TCP port for the registry API and {@code /metrics}; 0 for any free one
     * @param eventLoops              event loops (threads) serving requests
     * @param shutdownTimeout         how long a stopping mirror lets responses in progress finish
     * @param downloadMemory          bytes that blobs on their way from upstreams and to clients may hold in
     *                                memory, -1 for the default: an eighth of the JVM's heap, 16-256 MiB
     * @param bodyMemory              bytes that upstream answers held whole in memory (manifests, tag lists,
     *                                referrers, token answers) may take together, -1 for the default: an
     *                                eighth of the JVM's heap, 8-128 MiB
     * @param headerTimeout           how long a client has to send a whole request head
     * @param keepAliveTimeout        how long a keep-alive connection may sit idle between requests
     * @param maxConnections          client connections open at once at most; 0 for the default, derived
     *                                from the process's file-descriptor limit
     * @param maxConnectionsPerClient client connections open at once from one address at most
     */
    public record Server(String host, int port, int eventLoops, Duration shutdownTimeout, long downloadMemory,
                         long bodyMemory, Duration headerTimeout, Duration keepAliveTimeout, int maxConnections,
                         int maxConnectionsPerClient, Tls tls) {
    }

    /**
     * HTTPS served by the mirror itself; the files are read again when they change.
     *
     * @param certFile     PEM certificate, followed by its chain
     * @param keyFile      PEM private key (PKCS#8, or PKCS#1 RSA)
     * @param clientCaFile PEM certificates of the CA that signs client certificates; when set, every
     *                     client must present one (mutual TLS); {@code null}: none asked for
     */
    public record Tls(Path certFile, Path keyFile, Path clientCaFile) {
    }

    /**
     * @param path    root folder of the cache; created when missing
     * @param maxSize bytes of blobs and manifests kept at most, 0 for no limit; over it the least recently
     *                used go first, down to {@link #lowWatermark()}
     * @param maxAge  content not read for this long is removed; {@code null} for no limit
     * @param minFree free bytes to keep on the cache's file system: below it the least recently used
     *                content goes, until a tenth more than that is free; 0 for none
     * @param maxBlobSize the largest blob downloaded and stored; a larger one is refused
     */
    public record Storage(Path path, long maxSize, Duration maxAge, long minFree, long maxBlobSize) {
        /** What eviction brings the stored bytes down to: 90% of {@code maxSize}. */
        public long lowWatermark() {
            return maxSize - maxSize / 10;
        }
    }

    /**
     * One upstream registry.
     *
     * @param name           the registry host as clients name it ({@code docker.io}, {@code ghcr.io});
     *                       matched against containerd's {@code ?ns=} and a first path component
     * @param url            the registry API's base URL ({@code https://registry-1.docker.io})
     * @param username       optional user for token or Basic auth
     * @param password       optional password or access token; never logged
     * @param caFile         optional PEM file of extra CAs to trust, besides the system's
     * @param manifestTtl    how long a tag's answer is served without asking the upstream
     * @param connectTimeout how long to wait for a TCP/TLS connection
     * @param idleTimeout    how long an upstream response may stay silent before it is abandoned
     * @param retries        how many times a request that failed before any byte reached the client is
     *                       sent again (connection failures and 5xx answers)
     * @param retryBackoff   the wait before the first retry; each further retry waits four times longer
     * @param trustedRealms  hosts ({@code host} or {@code host:port}, lower case) besides the upstream's own
     *                       and the well-known ones, to which the credentials may be sent to get a token
     */
    /**
     * {@code hosted}: repositories teams push their own images to, beside the cache.
     *
     * @param repositories  globs of repository names as clients write them ({@code team/**}): {@code **}
     *                      spans components, {@code *} stays within one
     * @param maxSize       bytes hosted content may take at most (the quota); 0 for no limit. Hosted content
     *                      is never evicted, and does not count against {@code storage.maxSize}
     * @param delete        whether manifests, tags and blobs may be deleted
     * @param uploadExpiry  an upload not finished within this long is cancelled and its data removed
     * @param gcGrace       how long a blob no manifest names is kept after it was uploaded (for a manifest
     *                      still to come); garbage collection removes it after that
     */
    public record Hosted(List<String> repositories, long maxSize, boolean delete, Duration uploadExpiry,
                         Duration gcGrace) {
        public Hosted {
            repositories = List.copyOf(repositories);
        }

        /** Whether a repository name matches one of the globs. */
        public boolean matches(String name) {
            for (String g : repositories) {
                if (Globs.matches(g, name)) {
                    return true;
                }
            }
            return false;
        }
    }

    public record Upstream(String name, URI url, String username, String password, Path caFile,
                           Duration manifestTtl, Duration connectTimeout, Duration idleTimeout,
                           int retries, Duration retryBackoff, List<String> trustedRealms) {

        public Upstream {
            trustedRealms = List.copyOf(trustedRealms);
        }

        /** Whether credentials are configured. */
        public boolean hasCredentials() {
            return username != null && password != null;
        }

        /** Docker Hub keeps official images under {@code library/}. */
        public boolean isDockerHub() {
            return name.equals("docker.io");
        }

        @Override
        public String toString() {
            return "Upstream[name=" + name + ", url=" + url + ", username=" + username
                    + ", password=" + (password == null ? "none" : "***") + ", caFile=" + caFile
                    + ", manifestTtl=" + manifestTtl + ", connectTimeout=" + connectTimeout
                    + ", idleTimeout=" + idleTimeout + ", retries=" + retries + ", retryBackoff=" + retryBackoff
                    + ", trustedRealms=" + trustedRealms + "]";
        }
    }
}
