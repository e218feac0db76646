package dev.registrymirror.config;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import java.io.IOException;
import java.net.URI;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Builds a {@link MirrorConfig} from defaults, an optional YAML file, environment variables and
 * command-line flags, in rising order of precedence. Every value is checked here; an error names
 * the key and the value.
 *
 * <p>String values in the file may be written {@code ${NAME}} to take them from the environment, so
 * that passwords need not sit in the file.
 */
public final class ConfigLoader {
    /** Environment variable overriding {@code server.port}. */
    public static final String ENV_PORT = "REGISTRY_MIRROR_PORT";
    /** Environment variable overriding {@code storage.path}. */
    public static final String ENV_STORAGE = "REGISTRY_MIRROR_STORAGE";
    /** Environment variable overriding the default upstream's {@code url}. */
    public static final String ENV_UPSTREAM = "REGISTRY_MIRROR_UPSTREAM";

    public static final int DEFAULT_PORT = 5000;
    public static final String DEFAULT_STORAGE = "./data";
    public static final String DEFAULT_UPSTREAM_NAME = "docker.io";
    public static final String DEFAULT_UPSTREAM_URL = "https://registry-1.docker.io";
    public static final Duration DEFAULT_MANIFEST_TTL = Duration.ofMinutes(5);
    public static final Duration DEFAULT_CONNECT_TIMEOUT = Duration.ofSeconds(5);
    public static final Duration DEFAULT_IDLE_TIMEOUT = Duration.ofSeconds(30);
    public static final int DEFAULT_RETRIES = 2;
    /** The smallest {@code storage.maxSize} accepted: less could not hold a typical layer. */
    public static final long MIN_MAX_SIZE = 64L << 20;
    public static final Duration DEFAULT_RETRY_BACKOFF = Duration.ofMillis(250);
    public static final Duration DEFAULT_SHUTDOWN_TIMEOUT = Duration.ofSeconds(20);
    /** The default {@code storage.minFree}: room for the system and a few large layers in flight. */
    public static final long DEFAULT_MIN_FREE = 1L << 30;
    /** The default {@code storage.maxBlobSize}: far above the largest layers seen in practice. */
    public static final long DEFAULT_MAX_BLOB_SIZE = 64L << 30;
    /** nginx's {@code client_header_timeout}. */
    public static final Duration DEFAULT_HEADER_TIMEOUT = Duration.ofSeconds(60);
    /** nginx's {@code keepalive_timeout}. */
    public static final Duration DEFAULT_KEEP_ALIVE_TIMEOUT = Duration.ofSeconds(75);
    public static final int DEFAULT_MAX_CONNECTIONS_PER_CLIENT = 1024;

    private static final Pattern ENV_REF = Pattern.compile("\\$\\{([A-Za-z_][A-Za-z0-9_]*)}");
    private static final Pattern HOST_NAME =
            Pattern.compile("[a-z0-9]([a-z0-9-]*[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]{1,5})?");
    private static final ObjectMapper YAML = new ObjectMapper(new YAMLFactory());

    /** Values given on the command line; {@code null} means not given. */
    public record Overrides(Integer port, String storage, String upstreamUrl) {
        public static Overrides none() {
            return new Overrides(null, null, null);
        }
    }

    private final Map<String, String> env;

    private ConfigLoader(Map<String, String> env) {
        this.env = env;
    }

    /**
     * Loads the configuration.
     *
     * @param file      the YAML file, or {@code null} for defaults only
     * @param env       the process environment
     * @param overrides command-line flags
     * @throws ConfigException on any bad value, naming the key
     */
    public static MirrorConfig load(Path file, Map<String, String> env, Overrides overrides) {
        ConfigLoader loader = new ConfigLoader(env);
        JsonNode root = file == null ? YAML.createObjectNode() : loader.read(file);
        return loader.build(root, overrides);
    }

    /** Parses YAML text (for tests and tools); same rules as {@link #load}. */
    public static MirrorConfig parse(String yaml, Map<String, String> env, Overrides overrides) {
        ConfigLoader loader = new ConfigLoader(env);
        try {
            JsonNode root = YAML.readTree(yaml);
            return loader.build(root == null || root.isMissingNode() ? YAML.createObjectNode() : root, overrides);
        } catch (JsonProcessingException e) {
            throw new ConfigException("config is not valid YAML: " + e.getOriginalMessage());
        }
    }

    private JsonNode read(Path file) {
        if (!Files.isRegularFile(file)) {
            throw new ConfigException("config file " + file + " does not exist or is not a file");
        }
        try {
            JsonNode root = YAML.readTree(file.toFile());
            return root == null || root.isMissingNode() ? YAML.createObjectNode() : root;
        } catch (JsonProcessingException e) {
            throw new ConfigException("config file " + file + " is not valid YAML: " + e.getOriginalMessage());
        } catch (IOException e) {
            throw new ConfigException("config file " + file + " cannot be read: " + e.getMessage(), e);
        }
    }

    /** The smallest {@code server.bodyMemory}: one manifest of the largest size accepted. */
    static final long MIN_BODY_MEMORY = 4L << 20;

    private MirrorConfig build(JsonNode root, Overrides cli) {
        ObjectNode top = object(root, "(top level)");
        onlyKeys(top, "", Set.of("server", "storage", "upstreams", "prefetch", "admin", "access"));

        ObjectNode server = objectOrEmpty(top, "server");
        onlyKeys(server, "server.", Set.of("host", "port", "eventLoops", "shutdownTimeout", "downloadMemory",
                "bodyMemory", "headerTimeout", "keepAliveTimeout", "maxConnections", "maxConnectionsPerClient", "tls"));
        MirrorConfig.Tls tls = tls(server);
        String host = string(server, "server.host", "host", "0.0.0.0");
        Duration shutdownTimeout = duration(server, "server.shutdownTimeout", "shutdownTimeout",
                DEFAULT_SHUTDOWN_TIMEOUT, false);
        long downloadMemory = server.has("downloadMemory")
                ? size(server, "server.downloadMemory", "downloadMemory") : -1;
        long bodyMemory = server.has("bodyMemory") ? size(server, "server.bodyMemory", "bodyMemory") : -1;
        if (server.has("bodyMemory") && bodyMemory < MIN_BODY_MEMORY) {
            throw new ConfigException("server.bodyMemory: \"" + server.get("bodyMemory").asText()
                    + "\" is too small (at least 4MiB: a manifest may be that large)");
        }
        int eventLoops = positive(server, "server.eventLoops", "eventLoops",
                Math.max(1, Runtime.getRuntime().availableProcessors()), 256);
        Duration headerTimeout = duration(server, "server.headerTimeout", "headerTimeout", DEFAULT_HEADER_TIMEOUT, true);
        Duration keepAliveTimeout = duration(server, "server.keepAliveTimeout", "keepAliveTimeout",
                DEFAULT_KEEP_ALIVE_TIMEOUT, true);
        int maxConnections = server.has("maxConnections")
                ? positive(server, "server.maxConnections", "maxConnections", 0, 10_000_000) : 0;
        int maxConnectionsPerClient = positive(server, "server.maxConnectionsPerClient", "maxConnectionsPerClient",
                DEFAULT_MAX_CONNECTIONS_PER_CLIENT, 10_000_000);
        int port = integer(server, "server.port", "port", DEFAULT_PORT);
        if (env.get(ENV_PORT) != null) {
            port = parsePort(ENV_PORT, env.get(ENV_PORT));
        }
        if (cli.port() != null) {
            port = checkPort("--port", String.valueOf(cli.port()), cli.port());
        }
        checkPort("server.port", String.valueOf(port), port);

        ObjectNode storage = objectOrEmpty(top, "storage");
        onlyKeys(storage, "storage.", Set.of("path", "maxSize", "maxAge", "minFree", "maxBlobSize"));
        long maxSize = size(storage, "storage.maxSize", "maxSize");
        if (maxSize > 0 && maxSize < MIN_MAX_SIZE) {
            throw new ConfigException("storage.maxSize: \"" + storage.get("maxSize").asText()
                    + "\" is too small (at least 64MiB, or 0 for no limit)");
        }
        Duration maxAge = duration(storage, "storage.maxAge", "maxAge", null, true);
        if (maxAge != null && maxAge.compareTo(Duration.ofHours(1)) < 0) {
            throw new ConfigException("storage.maxAge: \"" + storage.get("maxAge").asText()
                    + "\" is too short (at least 1h; access times are recorded to the minute)");
        }
        long minFree = storage.has("minFree") ? size(storage, "storage.minFree", "minFree") : DEFAULT_MIN_FREE;
        long maxBlobSize = storage.has("maxBlobSize") ? size(storage, "storage.maxBlobSize", "maxBlobSize")
                : DEFAULT_MAX_BLOB_SIZE;
        if (maxBlobSize <= 0) {
            throw new ConfigException("storage.maxBlobSize: \"" + storage.get("maxBlobSize").asText()
                    + "\" must be more than zero");
        }
        String storagePath = string(storage, "storage.path", "path", DEFAULT_STORAGE);
        if (env.get(ENV_STORAGE) != null) {
            storagePath = env.get(ENV_STORAGE);
        }
        if (cli.storage() != null) {
            storagePath = cli.storage();
        }
        if (storagePath.isBlank()) {
            throw new ConfigException("storage.path: must not be empty");
        }

        List<MirrorConfig.Upstream> upstreams = new ArrayList<>();
        JsonNode list = top.get("upstreams");
        if (list == null || list.isNull()) {
            upstreams.add(defaultUpstream());
        } else if (!list.isArray()) {
            throw new ConfigException("upstreams: must be a list");
        } else {
            for (int i = 0; i < list.size(); i++) {
                upstreams.add(upstream(list.get(i), "upstreams[" + i + "]."));
            }
            if (upstreams.isEmpty()) {
                throw new ConfigException("upstreams: at least one upstream is required");
            }
        }
        String overrideUrl = cli.upstreamUrl() != null ? cli.upstreamUrl() : env.get(ENV_UPSTREAM);
        if (overrideUrl != null) {
            String key = cli.upstreamUrl() != null ? "--upstream" : ENV_UPSTREAM;
            MirrorConfig.Upstream first = upstreams.get(0);
            upstreams.set(0, new MirrorConfig.Upstream(first.name(), url(key, overrideUrl), first.username(),
                    first.password(), first.caFile(), first.manifestTtl(), first.connectTimeout(),
                    first.idleTimeout(), first.retries(), first.retryBackoff(), first.trustedRealms()));
        }
        Set<String> names = new HashSet<>();
        for (int i = 0; i < upstreams.size(); i++) {
            if (!names.add(upstreams.get(i).name())) {
                throw new ConfigException("upstreams[" + i + "].name: \"" + upstreams.get(i).name()
                        + "\" is used by an earlier upstream");
            }
        }
        List<MirrorConfig.Prefetch> prefetch = new ArrayList<>();
        JsonNode images = top.get("prefetch");
        if (images != null && !images.isNull()) {
            if (!images.isArray()) {
                throw new ConfigException("prefetch: must be a list");
            }
            for (int i = 0; i < images.size(); i++) {
                prefetch.add(prefetch(images.get(i), "prefetch[" + i + "].", upstreams));
            }
        }
        return new MirrorConfig(new MirrorConfig.Server(host, port, eventLoops, shutdownTimeout, downloadMemory,
                bodyMemory, headerTimeout, keepAliveTimeout, maxConnections, maxConnectionsPerClient, tls),
                new MirrorConfig.Storage(Path.of(storagePath), maxSize, maxAge, minFree, maxBlobSize), upstreams,
                prefetch, admin(objectOrEmpty(top, "admin")), access(objectOrEmpty(top, "access"), upstreams));
    }

    private static final Pattern CIDR = Pattern.compile("(\\d{1,3}(?:\\.\\d{1,3}){3}|[0-9a-fA-F:]+)/(\\d{1,3})");
    private static final Pattern PRINCIPAL = Pattern.compile("[A-Za-z0-9][A-Za-z0-9._@-]{0,127}");
    /** {@code <upstream name>[:port]/<repository glob>}: an upstream's name may carry a port ({@code lab.local:5000}). */
    private static final Pattern GLOB = Pattern.compile("[a-z0-9*][a-z0-9.*-]*(:[0-9*]+)?(/[a-z0-9._/*-]*)?");

    private MirrorConfig.Access access(ObjectNode access, List<MirrorConfig.Upstream> upstreams) {
        onlyKeys(access, "access.", Set.of("users", "networks", "rules", "metrics", "admin", "requestsPerSecond",
                "upstreamFetchesPerMinute", "tokenKey", "failedLoginsPerMinute"));
        Path users = readableFile(access, "access.users", "users");
        List<String> networks = new ArrayList<>();
        for (String n : list(access, "access.networks", "[10.0.0.0/8, 192.168.0.0/16]")) {
            java.util.regex.Matcher m = CIDR.matcher(n);
            int max = n.contains(":") ? 128 : 32;
            if (!m.matches() || Integer.parseInt(m.group(2)) > max) {
                throw new ConfigException("access.networks: \"" + n + "\" is not a CIDR block (e.g. 10.0.0.0/8)");
            }
            networks.add(n);
        }
        List<MirrorConfig.Rule> rules = new ArrayList<>();
        JsonNode list = access.get("rules");
        if (list != null && !list.isNull()) {
            if (!list.isArray()) {
                throw new ConfigException("access.rules: must be a list of {repositories: [...], pull: [...]}");
            }
            for (int i = 0; i < list.size(); i++) {
                String prefix = "access.rules[" + i + "].";
                ObjectNode rule = object(list.get(i), "access.rules[" + i + "]");
                onlyKeys(rule, prefix, Set.of("repositories", "pull"));
                List<String> repositories = list(rule, prefix + "repositories", "[\"docker.io/acme/**\"]");
                if (repositories.isEmpty()) {
                    throw new ConfigException(prefix + "repositories: required, e.g. [\"docker.io/acme/**\"]");
                }
                for (String g : repositories) {
                    String upstream = g.contains("/") ? g.substring(0, g.indexOf('/')) : g;
                    if (!GLOB.matcher(g).matches() || !g.equals("**") && !upstream.contains("*")
                            && upstreams.stream().noneMatch(u -> u.name().equals(upstream))) {
                        throw new ConfigException(prefix + "repositories: \"" + g + "\" is not <upstream name>/<repository glob>"
                                + " with a configured upstream (upstreams: " + String.join(", ",
                                upstreams.stream().map(MirrorConfig.Upstream::name).toList()) + ")");
                    }
                }
                rules.add(new MirrorConfig.Rule(repositories, principals(rule, prefix + "pull", users)));
            }
        }
        List<String> metrics = access.has("metrics") ? principals(access, "access.metrics", users) : null;
        List<String> admin = access.has("admin") ? principals(access, "access.admin", users) : null;
        int rps = access.has("requestsPerSecond")
                ? positive(access, "access.requestsPerSecond", "requestsPerSecond", 0, 1_000_000) : 0;
        int fetches = access.has("upstreamFetchesPerMinute") ? positive(access, "access.upstreamFetchesPerMinute",
                "upstreamFetchesPerMinute", 0, 1_000_000) : 0;
        String tokenKey = string(access, "access.tokenKey", "tokenKey", null);
        if (tokenKey != null && tokenKey.strip().length() < 32) {
            throw new ConfigException("access.tokenKey: too short (" + tokenKey.strip().length()
                    + " characters; at least 32, e.g. from `openssl rand -hex 32`)");
        }
        int failedLogins = positive(access, "access.failedLoginsPerMinute", "failedLoginsPerMinute",
                MirrorConfig.Access.DEFAULT_FAILED_LOGINS_PER_MINUTE, 1_000_000);
        return new MirrorConfig.Access(users, networks, rules, metrics, admin, rps, fetches,
                tokenKey == null ? null : tokenKey.strip(), failedLogins);
    }

    private List<String> principals(ObjectNode node, String key, Path users) {
        String field = key.substring(key.lastIndexOf('.') + 1);
        List<String> names = list(node, key, "[alice, authenticated, anonymous]");
        for (String p : names) {
            if (!PRINCIPAL.matcher(p).matches()) {
                throw new ConfigException(key + ": \"" + p + "\" is not a user or client-certificate name,"
                        + " \"authenticated\" or \"anonymous\"");
            }
        }
        if (names.isEmpty() && !node.get(field).isArray()) {
            throw new ConfigException(key + ": must be a list, e.g. [alice, authenticated, anonymous]");
        }
        return names;
    }

    /** A list of strings under {@code key}; empty when absent. */
    private List<String> list(ObjectNode node, String key, String example) {
        JsonNode n = node.get(key.substring(key.lastIndexOf('.') + 1));
        List<String> out = new ArrayList<>();
        if (n == null || n.isNull()) {
            return out;
        }
        if (!n.isArray()) {
            throw new ConfigException(key + ": must be a list, e.g. " + example);
        }
        for (JsonNode e : n) {
            if (!e.isValueNode()) {
                throw new ConfigException(key + ": must be a list of strings, e.g. " + example);
            }
            out.add(expand(key, e.asText()));
        }
        return out;
    }

    private MirrorConfig.Tls tls(ObjectNode server) {
        if (!server.has("tls") || server.get("tls").isNull()) {
            return null;
        }
        ObjectNode tls = object(server.get("tls"), "server.tls");
        onlyKeys(tls, "server.tls.", Set.of("certFile", "keyFile", "clientCaFile"));
        Path cert = readableFile(tls, "server.tls.certFile", "certFile");
        Path key = readableFile(tls, "server.tls.keyFile", "keyFile");
        if (cert == null || key == null) {
            throw new ConfigException("server.tls." + (cert == null ? "certFile" : "keyFile")
                    + ": required with server.tls (PEM files: the certificate with its chain, and its private key)");
        }
        return new MirrorConfig.Tls(cert, key, readableFile(tls, "server.tls.clientCaFile", "clientCaFile"));
    }

    private Path readableFile(ObjectNode node, String key, String field) {
        String text = string(node, key, field, null);
        if (text == null) {
            return null;
        }
        Path p = Path.of(text);
        if (!Files.isRegularFile(p) || !Files.isReadable(p)) {
            throw new ConfigException(key + ": \"" + text + "\" is not a readable file");
        }
        return p;
    }

    /** Admin tokens shorter than this are refused: the token is all that guards removals. */
    static final int MIN_ADMIN_TOKEN = 16;

    private MirrorConfig.Admin admin(ObjectNode admin) {
        onlyKeys(admin, "admin.", Set.of("token"));
        String token = string(admin, "admin.token", "token", null);
        if (token == null) {
            return MirrorConfig.Admin.OFF;
        }
        token = token.strip();
        if (token.length() < MIN_ADMIN_TOKEN) {
            // the value is a secret: the message gives its length only
            throw new ConfigException("admin.token: too short (" + token.length() + " characters; at least "
                    + MIN_ADMIN_TOKEN + ", e.g. from `openssl rand -hex 24`)");
        }
        return new MirrorConfig.Admin(token);
    }

    private MirrorConfig.Prefetch prefetch(JsonNode node, String prefix, List<MirrorConfig.Upstream> upstreams) {
        ObjectNode entry = object(node, prefix.substring(0, prefix.length() - 1));
        onlyKeys(entry, prefix, Set.of("image", "platforms", "every"));
        String key = prefix + "image";
        String image = string(entry, key, "image", null);
        List<String> platforms = new ArrayList<>();
        JsonNode list = entry.get("platforms");
        if (list != null && !list.isNull()) {
            if (!list.isArray()) {
                throw new ConfigException(prefix + "platforms: must be a list, e.g. [linux/amd64, linux/arm64]");
            }
            for (int i = 0; i < list.size(); i++) {
                String p = list.get(i).asText();
                try {
                    MirrorConfig.Prefetch.checkPlatform(p);
                } catch (IllegalArgumentException e) {
                    throw new ConfigException(prefix + "platforms[" + i + "]: " + e.getMessage());
                }
                platforms.add(p);
            }
        }
        Duration every = duration(entry, prefix + "every", "every", null, true);
        if (every != null && every.compareTo(Duration.ofMinutes(1)) < 0) {
            throw new ConfigException(prefix + "every: \"" + entry.get("every").asText() + "\" is too short (at least 1m)");
        }
        try {
            return MirrorConfig.Prefetch.parse(image, platforms, every, upstreams);
        } catch (IllegalArgumentException e) {
            throw new ConfigException(key + ": " + e.getMessage());
        }
    }

    private static MirrorConfig.Upstream defaultUpstream() {
        return new MirrorConfig.Upstream(DEFAULT_UPSTREAM_NAME, URI.create(DEFAULT_UPSTREAM_URL), null, null, null,
                DEFAULT_MANIFEST_TTL, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_RETRIES,
                DEFAULT_RETRY_BACKOFF, List.of());
    }

    private MirrorConfig.Upstream upstream(JsonNode node, String prefix) {
        ObjectNode o = object(node, prefix.substring(0, prefix.length() - 1));
        onlyKeys(o, prefix, Set.of("name", "url", "username", "password", "caFile", "manifestTtl",
                "connectTimeout", "idleTimeout", "retries", "retryBackoff", "trustedRealms"));
        String name = string(o, prefix + "name", "name", null);
        if (name == null) {
            throw new ConfigException(prefix + "name: is required (the registry host, e.g. docker.io)");
        }
        if (!HOST_NAME.matcher(name).matches()) {
            throw new ConfigException(prefix + "name: \"" + name
                    + "\" is not a registry host name (lower-case host, optional :port, e.g. ghcr.io)");
        }
        String urlText = string(o, prefix + "url", "url", null);
        if (urlText == null) {
            throw new ConfigException(prefix + "url: is required (e.g. https://registry-1.docker.io)");
        }
        String username = string(o, prefix + "username", "username", null);
        String password = string(o, prefix + "password", "password", null);
        if ((username == null) != (password == null)) {
            throw new ConfigException(prefix + (username == null ? "username" : "password")
                    + ": is required when " + (username == null ? "password" : "username") + " is set");
        }
        String ca = string(o, prefix + "caFile", "caFile", null);
        Path caFile = null;
        if (ca != null) {
            caFile = Path.of(ca);
            if (!Files.isReadable(caFile)) {
                throw new ConfigException(prefix + "caFile: \"" + ca + "\" is not a readable file");
            }
        }
        return new MirrorConfig.Upstream(name, url(prefix + "url", urlText), username, password, caFile,
                duration(o, prefix + "manifestTtl", "manifestTtl", DEFAULT_MANIFEST_TTL, false),
                duration(o, prefix + "connectTimeout", "connectTimeout", DEFAULT_CONNECT_TIMEOUT, true),
                duration(o, prefix + "idleTimeout", "idleTimeout", DEFAULT_IDLE_TIMEOUT, true),
                retries(o, prefix + "retries"),
                duration(o, prefix + "retryBackoff", "retryBackoff", DEFAULT_RETRY_BACKOFF, true),
                hosts(o, prefix + "trustedRealms", "trustedRealms"));
    }

    /** A list of registry host names ({@code host} or {@code host:port}), lower-cased. */
    private List<String> hosts(ObjectNode o, String key, String field) {
        JsonNode n = o.get(field);
        if (n == null || n.isNull()) {
            return List.of();
        }
        if (!n.isArray()) {
            throw new ConfigException(key + ": must be a list of host names (e.g. [auth.example.com])");
        }
        List<String> out = new ArrayList<>();
        for (int i = 0; i < n.size(); i++) {
            JsonNode item = n.get(i);
            if (!item.isValueNode()) {
                throw new ConfigException(key + "[" + i + "]: must be a host name, not a list or mapping");
            }
            String host = expand(key + "[" + i + "]", item.asText()).trim().toLowerCase(java.util.Locale.ROOT);
            if (!HOST_NAME.matcher(host).matches()) {
                throw new ConfigException(key + "[" + i + "]: \"" + item.asText()
                        + "\" is not a host name (a host, optionally with :port; no scheme or path)");
            }
            out.add(host);
        }
        return out;
    }

    private int positive(ObjectNode o, String key, String field, int fallback, int max) {
        int n = integer(o, key, field, fallback);
        if (n < 1 || n > max) {
            throw new ConfigException(key + ": \"" + n + "\" must be between 1 and " + max);
        }
        return n;
    }

    private int retries(ObjectNode o, String key) {
        int n = integer(o, key, "retries", DEFAULT_RETRIES);
        if (n < 0 || n > 10) {
            throw new ConfigException(key + ": \"" + n + "\" must be between 0 and 10");
        }
        return n;
    }

    private long size(ObjectNode node, String key, String field) {
        String text = string(node, key, field, null);
        if (text == null) {
            return 0;
        }
        try {
            return Values.size(text);
        } catch (IllegalArgumentException e) {
            throw new ConfigException(key + ": \"" + text + "\" is not a size (use e.g. 50GiB, 512MiB)");
        }
    }

    private static URI url(String key, String text) {
        URI uri;
        try {
            uri = new URI(text.endsWith("/") ? text.substring(0, text.length() - 1) : text);
        } catch (URISyntaxException e) {
            throw new ConfigException(key + ": \"" + text + "\" is not a URL");
        }
        String scheme = uri.getScheme();
        if (scheme == null || !(scheme.equals("http") || scheme.equals("https")) || uri.getHost() == null) {
            throw new ConfigException(key + ": \"" + text + "\" must be an http:// or https:// URL with a host");
        }
        if (uri.getUserInfo() != null) {
            throw new ConfigException(key + ": credentials do not belong in the URL; use username and password");
        }
        if (uri.getRawQuery() != null || uri.getRawFragment() != null) {
            throw new ConfigException(key + ": \"" + text + "\" must not have a query or fragment");
        }
        return uri;
    }

    private static int parsePort(String key, String text) {
        try {
            return checkPort(key, text, Integer.parseInt(text.trim()));
        } catch (NumberFormatException e) {
            throw new ConfigException(key + ": \"" + text + "\" is not a port number");
        }
    }

    private static int checkPort(String key, String text, int port) {
        if (port < 0 || port > 65535) {
            throw new ConfigException(key + ": \"" + text + "\" is not a port number (1-65535, or 0 for any free port)");
        }
        return port;
    }

    private static ObjectNode object(JsonNode node, String key) {
        if (!(node instanceof ObjectNode o)) {
            throw new ConfigException(key + ": must be a mapping of keys to values");
        }
        return o;
    }

    private static ObjectNode objectOrEmpty(ObjectNode parent, String key) {
        JsonNode n = parent.get(key);
        if (n == null || n.isNull()) {
            return YAML.createObjectNode();
        }
        return object(n, key);
    }

    private static void onlyKeys(ObjectNode node, String prefix, Set<String> allowed) {
        for (Iterator<String> it = node.fieldNames(); it.hasNext(); ) {
            String k = it.next();
            if (!allowed.contains(k)) {
                throw new ConfigException(prefix + k + ": unknown key (known here: " + String.join(", ",
                        allowed.stream().sorted().toList()) + ")");
            }
        }
    }

    private String string(ObjectNode node, String key, String field, String fallback) {
        JsonNode n = node.get(field);
        if (n == null || n.isNull()) {
            return fallback;
        }
        if (!n.isValueNode()) {
            throw new ConfigException(key + ": must be a single value, not a list or mapping");
        }
        return expand(key, n.asText());
    }

    private String expand(String key, String text) {
        Matcher m = ENV_REF.matcher(text);
        StringBuilder out = new StringBuilder();
        while (m.find()) {
            String value = env.get(m.group(1));
            if (value == null) {
                throw new ConfigException(key + ": refers to environment variable " + m.group(1) + ", which is not set");
            }
            m.appendReplacement(out, Matcher.quoteReplacement(value));
        }
        m.appendTail(out);
        return out.toString();
    }

    private int integer(ObjectNode node, String key, String field, int fallback) {
        String text = string(node, key, field, null);
        if (text == null) {
            return fallback;
        }
        try {
            return Integer.parseInt(text.trim());
        } catch (NumberFormatException e) {
            throw new ConfigException(key + ": \"" + text + "\" is not a whole number");
        }
    }

    private Duration duration(ObjectNode node, String key, String field, Duration fallback, boolean positive) {
        String text = string(node, key, field, null);
        if (text == null) {
            return fallback;
        }
        Duration d;
        try {
            d = Values.duration(text);
        } catch (IllegalArgumentException e) {
            throw new ConfigException(key + ": \"" + text + "\" is not a duration (use e.g. 30s, 5m, 1h30m)");
        }
        if (positive && d.isZero()) {
            throw new ConfigException(key + ": \"" + text + "\" must be more than zero");
        }
        return d;
    }
}
