package dev.registrymirror.config;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonMappingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.exc.InvalidFormatException;
import com.fasterxml.jackson.databind.exc.MismatchedInputException;
import com.fasterxml.jackson.databind.exc.UnrecognizedPropertyException;
import com.fasterxml.jackson.databind.exc.ValueInstantiationException;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.databind.node.TextNode;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import java.io.IOException;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashSet;
import java.util.Iterator;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Builds a {@link MirrorConfig} from defaults, an optional YAML file, environment variables and
 * command-line flags, in rising order of precedence. Every error names the key and the value.
 *
 * <p>The steps: the YAML is read as a tree; string values written {@code ${NAME}} are taken from
 * the environment (so that passwords need not sit in the file); Jackson binds the tree into the file's
 * records ({@link ConfigFile}), refusing unknown keys, reading sizes and durations, each record
 * checking its own values; then defaults, overrides and the checks that need other sections (the
 * upstreams that rules and prefetch entries name) give the {@link MirrorConfig}.
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
    public static final long MIN_MAX_SIZE = ConfigFile.Storage.MIN_MAX_SIZE;
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
    private static final ObjectMapper YAML = new ObjectMapper(new YAMLFactory());
    /** Binds the tree into {@link ConfigFile}: unknown keys refused, no guessing of lists from single values. */
    private static final ObjectMapper BINDER = JsonMapper.builder()
            .enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
            .disable(DeserializationFeature.ACCEPT_SINGLE_VALUE_AS_ARRAY)
            .build();

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

    private MirrorConfig build(JsonNode root, Overrides cli) {
        if (!root.isObject()) {
            throw new ConfigException("(top level): must be a mapping of keys to values");
        }
        expand(root, "");
        ConfigFile file = bind(root);
        return resolve(file, cli);
    }

    // ---------------------------------------------------------------- reading

    /** Replaces every {@code ${NAME}} in the tree's strings with the environment's value; {@code key} is the path. */
    private void expand(JsonNode node, String key) {
        if (node instanceof ObjectNode o) {
            for (Iterator<Map.Entry<String, JsonNode>> it = o.fields(); it.hasNext(); ) {
                Map.Entry<String, JsonNode> e = it.next();
                String child = key.isEmpty() ? e.getKey() : key + "." + e.getKey();
                if (e.getValue().isTextual()) {
                    e.setValue(TextNode.valueOf(expand(child, e.getValue().asText())));
                } else {
                    expand(e.getValue(), child);
                }
            }
        } else if (node instanceof ArrayNode a) {
            for (int i = 0; i < a.size(); i++) {
                String child = key + "[" + i + "]";
                if (a.get(i).isTextual()) {
                    a.set(i, TextNode.valueOf(expand(child, a.get(i).asText())));
                } else {
                    expand(a.get(i), child);
                }
            }
        }
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

    /** Jackson's binding, its errors said as this project says them: the key, then what is wrong with the value. */
    private static ConfigFile bind(JsonNode root) {
        try {
            return BINDER.treeToValue(root, ConfigFile.class);
        } catch (JsonMappingException e) {
            throw new ConfigException(message(e, root));
        } catch (JsonProcessingException e) {
            throw new ConfigException("config cannot be read: " + e.getOriginalMessage());
        }
    }

    private static String message(JsonMappingException e, JsonNode root) {
        String key = key(e.getPath());
        String prefix = key.isEmpty() ? "" : key + ": ";
        if (e instanceof ValueInstantiationException v && v.getType() != null && v.getType().getRawClass().isRecord()) {
            // Jackson builds a record before it looks at the keys it did not know: a misspelt key is
            // the better message than the check that failed for want of the key meant.
            Set<String> known = new java.util.TreeSet<>();
            for (java.lang.reflect.RecordComponent c : v.getType().getRawClass().getRecordComponents()) {
                known.add(c.getName());
            }
            JsonNode node = at(root, e.getPath());
            for (Iterator<String> it = node.fieldNames(); it.hasNext(); ) {
                String field = it.next();
                if (!known.contains(field)) {
                    return (key.isEmpty() ? "" : key + ".") + field + ": unknown key (known here: "
                            + String.join(", ", known) + ")";
                }
            }
        }
        if (e instanceof ValueInstantiationException && e.getCause() instanceof ConfigException c) {
            // A record's own check: its message names the key within the record.
            return key.isEmpty() ? c.getMessage() : key + "." + c.getMessage();
        }
        if (e instanceof ConfigFile.BadValue) {
            return prefix + e.getOriginalMessage();
        }
        if (e instanceof UnrecognizedPropertyException u) {
            List<String> known = new ArrayList<>();
            for (Object k : u.getKnownPropertyIds()) {
                known.add(String.valueOf(k));
            }
            known.sort(null);
            return prefix + "unknown key (known here: " + String.join(", ", known) + ")";
        }
        if (e instanceof InvalidFormatException f) {
            return prefix + "\"" + f.getValue() + "\" is not a whole number";
        }
        if (e instanceof MismatchedInputException m && m.getTargetType() != null) {
            Class<?> target = m.getTargetType();
            if (target.isRecord() || Map.class.isAssignableFrom(target)) {
                return prefix + "must be a mapping of keys to values";
            }
            if (Collection.class.isAssignableFrom(target)) {
                return prefix + "must be a list" + LIST_HINTS.getOrDefault(last(key), "");
            }
            return prefix + "must be a single value, not a list or mapping";
        }
        return prefix + e.getOriginalMessage();
    }

    /** What a list under a key holds, for the message when it is not a list. */
    private static final Map<String, String> LIST_HINTS = Map.of(
            "trustedRealms", " of host names (e.g. [auth.example.com])",
            "networks", ", e.g. [10.0.0.0/8, 192.168.0.0/16]",
            "platforms", ", e.g. [linux/amd64, linux/arm64]",
            "repositories", ", e.g. [\"docker.io/acme/**\"]",
            "pull", ", e.g. [alice, authenticated, anonymous]",
            "push", ", e.g. [alice, ci-bot]",
            "metrics", ", e.g. [alice, authenticated, anonymous]",
            "admin", ", e.g. [alice, authenticated, anonymous]",
            "rules", " of {repositories: [...], pull: [...]}",
            "members", " of <address>:<port>, e.g. [10.0.0.5:7800, 10.0.0.6:7800]");

    private static String last(String key) {
        String k = key.replaceAll("\\[\\d+]$", "");
        return k.substring(k.lastIndexOf('.') + 1);
    }

    /** The node of the tree at Jackson's path. */
    private static JsonNode at(JsonNode root, List<JsonMappingException.Reference> path) {
        JsonNode node = root;
        for (JsonMappingException.Reference r : path) {
            node = r.getFieldName() != null ? node.path(r.getFieldName()) : node.path(r.getIndex());
        }
        return node;
    }

    /** {@code upstreams[0].manifestTtl}, from Jackson's path. */
    private static String key(List<JsonMappingException.Reference> path) {
        StringBuilder key = new StringBuilder();
        for (JsonMappingException.Reference r : path) {
            if (r.getFieldName() != null) {
                if (key.length() > 0) {
                    key.append('.');
                }
                key.append(r.getFieldName());
            } else if (r.getIndex() >= 0) {
                key.append('[').append(r.getIndex()).append(']');
            }
        }
        return key.toString();
    }

    // ---------------------------------------------------------------- defaults, overrides, cross-checks

    private MirrorConfig resolve(ConfigFile f, Overrides cli) {
        ConfigFile.Server server = f.server() != null ? f.server()
                : new ConfigFile.Server(null, null, null, null, null, null, null, null, null, null, null);
        int port = or(server.port(), DEFAULT_PORT);
        if (env.get(ENV_PORT) != null) {
            port = parsePort(ENV_PORT, env.get(ENV_PORT));
        }
        if (cli.port() != null) {
            port = ConfigFile.checkPort("--port", String.valueOf(cli.port()), cli.port());
        }
        ConfigFile.Tls tls = server.tls();
        MirrorConfig.Server s = new MirrorConfig.Server(or(server.host(), "0.0.0.0"), port,
                or(server.eventLoops(), Math.max(1, Runtime.getRuntime().availableProcessors())),
                span(server.shutdownTimeout(), DEFAULT_SHUTDOWN_TIMEOUT), bytes(server.downloadMemory(), -1),
                bytes(server.bodyMemory(), -1), span(server.headerTimeout(), DEFAULT_HEADER_TIMEOUT),
                span(server.keepAliveTimeout(), DEFAULT_KEEP_ALIVE_TIMEOUT), or(server.maxConnections(), 0),
                or(server.maxConnectionsPerClient(), DEFAULT_MAX_CONNECTIONS_PER_CLIENT),
                tls == null ? null : new MirrorConfig.Tls(Path.of(tls.certFile()), Path.of(tls.keyFile()),
                        tls.clientCaFile() == null ? null : Path.of(tls.clientCaFile())));

        ConfigFile.Storage storage = f.storage() != null ? f.storage()
                : new ConfigFile.Storage(null, null, null, null, null);
        String path = or(storage.path(), DEFAULT_STORAGE);
        if (env.get(ENV_STORAGE) != null) {
            path = env.get(ENV_STORAGE);
        }
        if (cli.storage() != null) {
            path = cli.storage();
        }
        if (path.isBlank()) {
            throw new ConfigException("storage.path: must not be empty");
        }
        MirrorConfig.Storage st = new MirrorConfig.Storage(Path.of(path), bytes(storage.maxSize(), 0),
                storage.maxAge() == null ? null : storage.maxAge().value(), bytes(storage.minFree(), DEFAULT_MIN_FREE),
                bytes(storage.maxBlobSize(), DEFAULT_MAX_BLOB_SIZE));

        List<MirrorConfig.Upstream> upstreams = upstreams(f.upstreams());
        String overrideUrl = cli.upstreamUrl() != null ? cli.upstreamUrl() : env.get(ENV_UPSTREAM);
        if (overrideUrl != null) {
            String key = cli.upstreamUrl() != null ? "--upstream" : ENV_UPSTREAM;
            MirrorConfig.Upstream first = upstreams.get(0);
            upstreams.set(0, new MirrorConfig.Upstream(first.name(), ConfigFile.url(key, overrideUrl), first.username(),
                    first.password(), first.caFile(), first.manifestTtl(), first.connectTimeout(),
                    first.idleTimeout(), first.retries(), first.retryBackoff(), first.trustedRealms()));
        }
        List<MirrorConfig.Prefetch> prefetch = new ArrayList<>();
        if (f.prefetch() != null) {
            for (int i = 0; i < f.prefetch().size(); i++) {
                ConfigFile.Prefetch p = f.prefetch().get(i);
                try {
                    prefetch.add(MirrorConfig.Prefetch.parse(p.image(), or(p.platforms(), List.of()),
                            p.every() == null ? null : p.every().value(), upstreams));
                } catch (IllegalArgumentException e) {
                    throw new ConfigException("prefetch[" + i + "].image: " + e.getMessage());
                }
            }
        }
        MirrorConfig.Admin admin = f.admin() == null || f.admin().token() == null ? MirrorConfig.Admin.OFF
                : new MirrorConfig.Admin(f.admin().token());
        MirrorConfig.Hosted hosted = hosted(f.hosted(), upstreams);
        if (hosted != null && f.cluster() != null) {
            // Each replica would keep its own hosted content: a push spread by a load balancer over
            // several would be lost in pieces, and a replica's pushes gone with it.
            throw new ConfigException("hosted: not available with cluster yet (a cluster's replicas do not share"
                    + " pushed images); run hosted repositories on a mirror of their own, or leave out cluster");
        }
        return new MirrorConfig(s, st, upstreams, prefetch, admin, access(f.access(), upstreams, hosted),
                cluster(f.cluster()), hosted);
    }

    /** How long an unfinished upload is kept: Docker resumes none, and a day covers any slow link. */
    public static final Duration DEFAULT_UPLOAD_EXPIRY = Duration.ofHours(24);
    /** How long an uploaded blob waits for a manifest to name it before collection may remove it. */
    public static final Duration DEFAULT_GC_GRACE = Duration.ofHours(1);

    private static MirrorConfig.Hosted hosted(ConfigFile.Hosted h, List<MirrorConfig.Upstream> upstreams) {
        if (h == null) {
            return null;
        }
        for (int i = 0; i < h.repositories().size(); i++) {
            String g = h.repositories().get(i);
            String first = g.contains("/") ? g.substring(0, g.indexOf('/')) : g;
            for (MirrorConfig.Upstream u : upstreams) {
                // /v2/<upstream name>/... goes to that upstream: such a glob could never be pushed to.
                if (Globs.matches(first, u.name())) {
                    throw new ConfigException("hosted.repositories[" + i + "]: \"" + g + "\" names upstream "
                            + u.name() + ", whose repositories are pulled through it (name hosted ones without it)");
                }
            }
        }
        return new MirrorConfig.Hosted(h.repositories(), bytes(h.maxSize(), 0), or(h.delete(), false),
                span(h.uploadExpiry(), DEFAULT_UPLOAD_EXPIRY), span(h.gcGrace(), DEFAULT_GC_GRACE));
    }

    /** Two seconds' warning is not enough on a busy machine; a minute (Hazelcast's default) far too long. */
    public static final Duration DEFAULT_FAILURE_DETECTION = Duration.ofSeconds(5);

    private static MirrorConfig.Cluster cluster(ConfigFile.Cluster c) {
        if (c == null) {
            return null;
        }
        int colon = c.bind().lastIndexOf(':');
        return new MirrorConfig.Cluster(c.name(), c.secret(), c.bind().substring(0, colon),
                Integer.parseInt(c.bind().substring(colon + 1)), or(c.members(), List.of()), c.dns(), c.dnsServer(),
                ConfigFile.url("cluster.url", c.url()), or(c.copies(), 1), span(c.failureDetection(),
                DEFAULT_FAILURE_DETECTION));
    }

    private List<MirrorConfig.Upstream> upstreams(List<ConfigFile.Upstream> entries) {
        List<MirrorConfig.Upstream> upstreams = new ArrayList<>();
        if (entries == null) {
            upstreams.add(new MirrorConfig.Upstream(DEFAULT_UPSTREAM_NAME, URI.create(DEFAULT_UPSTREAM_URL), null, null,
                    null, DEFAULT_MANIFEST_TTL, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_RETRIES,
                    DEFAULT_RETRY_BACKOFF, List.of()));
            return upstreams;
        }
        if (entries.isEmpty()) {
            throw new ConfigException("upstreams: at least one upstream is required");
        }
        Set<String> names = new HashSet<>();
        for (int i = 0; i < entries.size(); i++) {
            ConfigFile.Upstream u = entries.get(i);
            if (!names.add(u.name())) {
                throw new ConfigException("upstreams[" + i + "].name: \"" + u.name() + "\" is used by an earlier upstream");
            }
            upstreams.add(new MirrorConfig.Upstream(u.name(), ConfigFile.url("upstreams[" + i + "].url", u.url()),
                    u.username(), u.password(), u.caFile() == null ? null : Path.of(u.caFile()),
                    span(u.manifestTtl(), DEFAULT_MANIFEST_TTL), span(u.connectTimeout(), DEFAULT_CONNECT_TIMEOUT),
                    span(u.idleTimeout(), DEFAULT_IDLE_TIMEOUT), or(u.retries(), DEFAULT_RETRIES),
                    span(u.retryBackoff(), DEFAULT_RETRY_BACKOFF),
                    u.trustedRealms() == null ? List.of()
                            : u.trustedRealms().stream().map(h -> h.trim().toLowerCase(Locale.ROOT)).toList()));
        }
        return upstreams;
    }

    private static MirrorConfig.Access access(ConfigFile.Access a, List<MirrorConfig.Upstream> upstreams,
                                              MirrorConfig.Hosted hosted) {
        if (a == null) {
            return MirrorConfig.Access.OPEN;
        }
        List<MirrorConfig.Rule> rules = new ArrayList<>();
        if (a.rules() != null) {
            for (int i = 0; i < a.rules().size(); i++) {
                ConfigFile.Rule r = a.rules().get(i);
                for (String g : r.repositories()) {
                    if (!hostedGlob(g, hosted)) {
                        checkRuleGlob("access.rules[" + i + "].repositories", g, upstreams);
                    }
                }
                rules.add(new MirrorConfig.Rule(r.repositories(), or(r.pull(), List.of()), or(r.push(), List.of())));
            }
        }
        return new MirrorConfig.Access(a.users() == null ? null : Path.of(a.users()), or(a.networks(), List.of()), rules,
                a.metrics(), a.admin(), or(a.requestsPerSecond(), 0), or(a.upstreamFetchesPerMinute(), 0), a.tokenKey(),
                or(a.failedLoginsPerMinute(), MirrorConfig.Access.DEFAULT_FAILED_LOGINS_PER_MINUTE));
    }

    /** {@code <upstream name>[:port]/<repository glob>}: an upstream's name may carry a port ({@code lab.local:5000}). */
    private static final Pattern GLOB = Pattern.compile("[a-z0-9*][a-z0-9.*-]*(:[0-9*]+)?(/[a-z0-9._/*-]*)?");

    /**
     * Whether a rule's glob is about hosted repositories, which rules name as clients push them
     * ({@code team/**}): it matches some of a hosted glob's names, or a hosted glob matches some of its.
     */
    private static boolean hostedGlob(String g, MirrorConfig.Hosted hosted) {
        if (hosted == null || g.equals("**")) {
            return false;
        }
        for (String h : hosted.repositories()) {
            if (h.equals(g) || Globs.matches(h, g.replace("*", "x")) || Globs.matches(g, h.replace("*", "x"))) {
                return true;
            }
        }
        return false;
    }

    private static void checkRuleGlob(String key, String g, List<MirrorConfig.Upstream> upstreams) {
        String upstream = g.contains("/") ? g.substring(0, g.indexOf('/')) : g;
        if (!GLOB.matcher(g).matches() || !g.equals("**") && !upstream.contains("*")
                && upstreams.stream().noneMatch(u -> u.name().equals(upstream))) {
            throw new ConfigException(key + ": \"" + g + "\" is not <upstream name>/<repository glob>"
                    + " with a configured upstream (upstreams: " + String.join(", ",
                    upstreams.stream().map(MirrorConfig.Upstream::name).toList()) + ")");
        }
    }

    private static int parsePort(String key, String text) {
        try {
            return ConfigFile.checkPort(key, text, Integer.parseInt(text.trim()));
        } catch (NumberFormatException e) {
            throw new ConfigException(key + ": \"" + text + "\" is not a port number");
        }
    }

    private static <T> T or(T value, T fallback) {
        return value != null ? value : fallback;
    }

    private static Duration span(ConfigFile.Span s, Duration fallback) {
        return s == null ? fallback : s.value();
    }

    private static long bytes(ConfigFile.Size s, long fallback) {
        return s == null ? fallback : s.bytes();
    }
}
