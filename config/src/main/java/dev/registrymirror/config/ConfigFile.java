package dev.registrymirror.config;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.databind.DeserializationContext;
import com.fasterxml.jackson.databind.JsonMappingException;
import com.fasterxml.jackson.databind.annotation.JsonDeserialize;
import com.fasterxml.jackson.databind.deser.std.StdDeserializer;
import java.io.IOException;
import java.net.URI;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Locale;
import java.util.regex.Pattern;

/**
 * The configuration file as the operator writes it: one record per section, which Jackson binds
 * (unknown keys refused), every value left out {@code null}. Each record checks what it can check
 * alone, and its errors name the key relative to the record ({@code port: "70000" is not a port
 * number}); {@link ConfigLoader} puts the record's own path in front ({@code server.port: ...}) and
 * does what needs other sections (defaults, overrides, names of upstreams in rules and prefetch).
 */
record ConfigFile(Server server, Storage storage, List<Upstream> upstreams, List<Prefetch> prefetch, Admin admin,
                  Access access, Cluster cluster, Hosted hosted) {

    /** A size as written ({@code 512MiB}), and its bytes. */
    @JsonDeserialize(using = Size.Reader.class)
    record Size(long bytes, String text) {
        /** Reads a size from a string or a number; anything else is not one. */
        static final class Reader extends StdDeserializer<Size> {
            private static final long serialVersionUID = 1L;

            Reader() {
                super(Size.class);
            }

            @Override
            public Size deserialize(JsonParser p, DeserializationContext ctxt) throws IOException {
                String text = scalar(p);
                try {
                    return new Size(Values.size(text), text);
                } catch (IllegalArgumentException e) {
                    throw new BadValue(p, "\"" + text + "\" is not a size (use e.g. 50GiB, 512MiB)");
                }
            }
        }
    }

    /** A duration as written ({@code 1h30m}), and its value. */
    @JsonDeserialize(using = Span.Reader.class)
    record Span(Duration value, String text) {
        /** Fails unless more than zero. */
        Span positive(String key) {
            if (value.isZero()) {
                throw new ConfigException(key + ": \"" + text + "\" must be more than zero");
            }
            return this;
        }

        static final class Reader extends StdDeserializer<Span> {
            private static final long serialVersionUID = 1L;

            Reader() {
                super(Span.class);
            }

            @Override
            public Span deserialize(JsonParser p, DeserializationContext ctxt) throws IOException {
                String text = scalar(p);
                try {
                    return new Span(Values.duration(text), text);
                } catch (IllegalArgumentException e) {
                    throw new BadValue(p, "\"" + text + "\" is not a duration (use e.g. 30s, 5m, 1h30m)");
                }
            }
        }
    }

    /** A value the file gives in a form it cannot have; the message names the value, the loader the key. */
    static final class BadValue extends JsonMappingException {
        private static final long serialVersionUID = 1L;

        BadValue(JsonParser p, String message) {
            super(p, message);
        }
    }

    /** The text of a single value (a string, a number, a boolean); a list or a mapping is refused. */
    private static String scalar(JsonParser p) throws IOException {
        JsonToken t = p.currentToken();
        if (t == JsonToken.START_ARRAY || t == JsonToken.START_OBJECT) {
            throw new BadValue(p, "must be a single value, not a list or mapping");
        }
        return p.getText();
    }

    record Server(String host, Integer port, Integer eventLoops, Span shutdownTimeout, Size downloadMemory,
                  Size bodyMemory, Span headerTimeout, Span keepAliveTimeout, Integer maxConnections,
                  Integer maxConnectionsPerClient, Tls tls) {
        /** The smallest {@code server.bodyMemory}: one manifest of the largest size accepted. */
        static final long MIN_BODY_MEMORY = 4L << 20;

        Server {
            if (port != null) {
                checkPort("port", String.valueOf(port), port);
            }
            between("eventLoops", eventLoops, 1, 256);
            between("maxConnections", maxConnections, 1, 10_000_000);
            between("maxConnectionsPerClient", maxConnectionsPerClient, 1, 10_000_000);
            if (headerTimeout != null) {
                headerTimeout.positive("headerTimeout");
            }
            if (keepAliveTimeout != null) {
                keepAliveTimeout.positive("keepAliveTimeout");
            }
            if (bodyMemory != null && bodyMemory.bytes() < MIN_BODY_MEMORY) {
                throw new ConfigException("bodyMemory: \"" + bodyMemory.text()
                        + "\" is too small (at least 4MiB: a manifest may be that large)");
            }
        }
    }

    record Tls(String certFile, String keyFile, String clientCaFile) {
        Tls {
            if (certFile == null || keyFile == null) {
                throw new ConfigException((certFile == null ? "certFile" : "keyFile")
                        + ": required with server.tls (PEM files: the certificate with its chain, and its private key)");
            }
            readableFile("certFile", certFile);
            readableFile("keyFile", keyFile);
            readableFile("clientCaFile", clientCaFile);
        }
    }

    record Storage(String path, Size maxSize, Span maxAge, Size minFree, Size maxBlobSize) {
        /** The smallest {@code storage.maxSize} accepted: less could not hold a typical layer. */
        static final long MIN_MAX_SIZE = 64L << 20;

        Storage {
            if (maxSize != null && maxSize.bytes() > 0 && maxSize.bytes() < MIN_MAX_SIZE) {
                throw new ConfigException("maxSize: \"" + maxSize.text()
                        + "\" is too small (at least 64MiB, or 0 for no limit)");
            }
            if (maxAge != null && maxAge.value().compareTo(Duration.ofHours(1)) < 0) {
                throw new ConfigException("maxAge: \"" + maxAge.text()
                        + "\" is too short (at least 1h; access times are recorded to the minute)");
            }
            if (maxBlobSize != null && maxBlobSize.bytes() <= 0) {
                throw new ConfigException("maxBlobSize: \"" + maxBlobSize.text() + "\" must be more than zero");
            }
            if (path != null && path.isBlank()) {
                throw new ConfigException("path: must not be empty");
            }
        }
    }

    /** A repository glob: the name grammar's characters, and {@code *}. */
    private static final Pattern REPOSITORY_GLOB = Pattern.compile("[a-z0-9*][a-z0-9._/*-]*");

    record Hosted(List<String> repositories, Size maxSize, Boolean delete, Span uploadExpiry, Span gcGrace) {
        Hosted {
            if (repositories == null || repositories.isEmpty()) {
                throw new ConfigException("repositories: required, the repositories pushed here, e.g. [\"team/**\"]");
            }
            for (int i = 0; i < repositories.size(); i++) {
                String g = repositories.get(i);
                if (g == null || !REPOSITORY_GLOB.matcher(g).matches() || g.contains("//") || g.endsWith("/")) {
                    throw new ConfigException("repositories[" + i + "]: \"" + g + "\" is not a repository glob"
                            + " (a repository name as clients push it, with * and **, e.g. team/**)");
                }
            }
            if (maxSize != null && maxSize.bytes() < 0) {
                throw new ConfigException("maxSize: \"" + maxSize.text() + "\" must not be negative");
            }
            if (uploadExpiry != null && uploadExpiry.value().compareTo(Duration.ofMinutes(1)) < 0) {
                throw new ConfigException("uploadExpiry: \"" + uploadExpiry.text()
                        + "\" is too short (at least 1m: a large layer takes that long on a slow link)");
            }
            if (gcGrace != null && gcGrace.value().compareTo(Duration.ofMinutes(10)) < 0) {
                throw new ConfigException("gcGrace: \"" + gcGrace.text() + "\" is too short (at least 10m: a push"
                        + " uploads its layers before its manifest, and a big image takes minutes)");
            }
        }
    }

    /** A registry host as clients name it: lower case, an optional port. */
    static final Pattern HOST_NAME =
            Pattern.compile("[a-z0-9]([a-z0-9-]*[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]{1,5})?");

    record Upstream(String name, String url, String username, String password, String caFile, Span manifestTtl,
                    Span connectTimeout, Span idleTimeout, Integer retries, Span retryBackoff,
                    List<String> trustedRealms) {
        Upstream {
            if (name == null) {
                throw new ConfigException("name: is required (the registry host, e.g. docker.io)");
            }
            if (!HOST_NAME.matcher(name).matches()) {
                throw new ConfigException("name: \"" + name
                        + "\" is not a registry host name (lower-case host, optional :port, e.g. ghcr.io)");
            }
            if (url == null) {
                throw new ConfigException("url: is required (e.g. https://registry-1.docker.io)");
            }
            ConfigFile.url("url", url);
            if ((username == null) != (password == null)) {
                throw new ConfigException((username == null ? "username" : "password")
                        + ": is required when " + (username == null ? "password" : "username") + " is set");
            }
            if (caFile != null && !Files.isReadable(Path.of(caFile))) {
                throw new ConfigException("caFile: \"" + caFile + "\" is not a readable file");
            }
            for (Span s : new Span[] {connectTimeout, idleTimeout, retryBackoff}) {
                if (s != null) {
                    s.positive(s == connectTimeout ? "connectTimeout" : s == idleTimeout ? "idleTimeout" : "retryBackoff");
                }
            }
            between("retries", retries, 0, 10);
            if (trustedRealms != null) {
                for (int i = 0; i < trustedRealms.size(); i++) {
                    String host = trustedRealms.get(i).trim().toLowerCase(Locale.ROOT);
                    if (!HOST_NAME.matcher(host).matches()) {
                        throw new ConfigException("trustedRealms[" + i + "]: \"" + trustedRealms.get(i)
                                + "\" is not a host name (a host, optionally with :port; no scheme or path)");
                    }
                }
            }
        }
    }

    record Prefetch(String image, List<String> platforms, Span every) {
        Prefetch {
            if (platforms != null) {
                for (int i = 0; i < platforms.size(); i++) {
                    try {
                        MirrorConfig.Prefetch.checkPlatform(platforms.get(i));
                    } catch (IllegalArgumentException e) {
                        throw new ConfigException("platforms[" + i + "]: " + e.getMessage());
                    }
                }
            }
            if (every != null && every.value().compareTo(Duration.ofMinutes(1)) < 0) {
                throw new ConfigException("every: \"" + every.text() + "\" is too short (at least 1m)");
            }
        }
    }

    record Admin(String token) {
        /** Admin tokens shorter than this are refused: the token is all that guards removals. */
        static final int MIN_TOKEN = 16;

        Admin {
            token = token == null ? null : token.strip();
            if (token != null && token.length() < MIN_TOKEN) {
                // the value is a secret: the message gives its length only
                throw new ConfigException("token: too short (" + token.length() + " characters; at least "
                        + MIN_TOKEN + ", e.g. from `openssl rand -hex 24`)");
            }
        }

        @Override
        public String toString() {
            return "Admin[token=" + (token == null ? "none" : "(set)") + "]";
        }
    }

    /** {@code host:port}: a membership address. */
    private static final Pattern HOST_PORT = Pattern.compile("[A-Za-z0-9.-]+:[0-9]{1,5}");

    record Cluster(String name, String secret, String bind, List<String> members, String dns, String dnsServer,
                   String url, Integer copies, Span failureDetection) {
        Cluster {
            if (name == null || !name.matches("[A-Za-z0-9][A-Za-z0-9._-]{0,63}")) {
                throw new ConfigException("name: " + (name == null ? "required" : "\"" + name + "\" is not a name")
                        + " (letters, digits, '.', '_', '-'; e.g. lan)");
            }
            secret = secret == null ? null : secret.strip();
            if (secret == null || secret.length() < 32) {
                // the value is a secret: the message gives its length only
                throw new ConfigException("secret: " + (secret == null ? "required" : "too short (" + secret.length()
                        + " characters)") + "; at least 32, e.g. from `openssl rand -hex 32`");
            }
            if (bind == null || !HOST_PORT.matcher(bind).matches()) {
                throw new ConfigException("bind: " + (bind == null ? "required" : "\"" + bind + "\" is not <address>:<port>")
                        + " (this replica's membership address, e.g. 10.0.0.5:7800)");
            }
            checkPort("bind", bind, Integer.parseInt(bind.substring(bind.lastIndexOf(':') + 1)));
            if ((members == null || members.isEmpty()) == (dns == null)) {
                throw new ConfigException("members: give either members (a list of <address>:<port>) or dns (a name"
                        + " whose addresses are the replicas), " + (dns == null ? "not neither" : "not both"));
            }
            if (members != null) {
                for (int i = 0; i < members.size(); i++) {
                    if (!HOST_PORT.matcher(members.get(i)).matches()) {
                        throw new ConfigException("members[" + i + "]: \"" + members.get(i) + "\" is not <address>:<port>");
                    }
                }
            }
            if (dnsServer != null && (dns == null || !HOST_PORT.matcher(dnsServer).matches())) {
                throw new ConfigException("dnsServer: " + (dns == null ? "only with dns"
                        : "\"" + dnsServer + "\" is not <address>:<port>") + " (the DNS server to ask for dns, e.g."
                        + " 10.96.0.10:53; without it, the system's)");
            }
            if (url == null) {
                throw new ConfigException("url: required (this replica's registry API as the others reach it,"
                        + " e.g. http://10.0.0.5:5000)");
            }
            ConfigFile.url("url", url);
            between("copies", copies, 1, 16);
            if (failureDetection != null) {
                failureDetection.positive("failureDetection");
                if (failureDetection.value().compareTo(Duration.ofSeconds(1)) < 0) {
                    throw new ConfigException("failureDetection: \"" + failureDetection.text()
                            + "\" is too short (at least 1s: shorter takes busy replicas for dead ones)");
                }
            }
        }

        @Override
        public String toString() {
            return "Cluster[name=" + name + ", secret=(set)]";
        }
    }

    /** CIDR blocks, IPv4 or IPv6. */
    private static final Pattern CIDR = Pattern.compile("(\\d{1,3}(?:\\.\\d{1,3}){3}|[0-9a-fA-F:]+)/(\\d{1,3})");
    /** A user or client-certificate name, or {@code authenticated}, {@code anonymous}. */
    static final Pattern PRINCIPAL = Pattern.compile("[A-Za-z0-9][A-Za-z0-9._@-]{0,127}");

    record Access(String users, List<String> networks, List<Rule> rules, List<String> metrics, List<String> admin,
                  Integer requestsPerSecond, Integer upstreamFetchesPerMinute, String tokenKey,
                  Integer failedLoginsPerMinute) {
        Access {
            readableFile("users", users);
            if (networks != null) {
                for (String n : networks) {
                    java.util.regex.Matcher m = CIDR.matcher(n);
                    int max = n.contains(":") ? 128 : 32;
                    if (!m.matches() || Integer.parseInt(m.group(2)) > max) {
                        throw new ConfigException("networks: \"" + n + "\" is not a CIDR block (e.g. 10.0.0.0/8)");
                    }
                }
            }
            principals("metrics", metrics);
            principals("admin", admin);
            between("requestsPerSecond", requestsPerSecond, 1, 1_000_000);
            between("upstreamFetchesPerMinute", upstreamFetchesPerMinute, 1, 1_000_000);
            between("failedLoginsPerMinute", failedLoginsPerMinute, 1, 1_000_000);
            tokenKey = tokenKey == null ? null : tokenKey.strip();
            if (tokenKey != null && tokenKey.length() < 32) {
                throw new ConfigException("tokenKey: too short (" + tokenKey.length()
                        + " characters; at least 32, e.g. from `openssl rand -hex 32`)");
            }
        }

        @Override
        public String toString() {
            return "Access[users=" + users + ", tokenKey=" + (tokenKey == null ? "none" : "(set)") + "]";
        }
    }

    record Rule(List<String> repositories, List<String> pull, List<String> push) {
        Rule {
            if (repositories == null || repositories.isEmpty()) {
                throw new ConfigException("repositories: required, e.g. [\"docker.io/acme/**\"]");
            }
            principals("pull", pull);
            principals("push", push);
        }
    }

    private static void principals(String key, List<String> names) {
        if (names == null) {
            return;
        }
        for (String p : names) {
            if (!PRINCIPAL.matcher(p).matches()) {
                throw new ConfigException(key + ": \"" + p + "\" is not a user or client-certificate name,"
                        + " \"authenticated\" or \"anonymous\"");
            }
        }
    }

    private static void between(String key, Integer n, int min, int max) {
        if (n != null && (n < min || n > max)) {
            throw new ConfigException(key + ": \"" + n + "\" must be between " + min + " and " + max);
        }
    }

    /** Fails unless {@code text} (when given) names a readable regular file. */
    static void readableFile(String key, String text) {
        if (text == null) {
            return;
        }
        Path p = Path.of(text);
        if (!Files.isRegularFile(p) || !Files.isReadable(p)) {
            throw new ConfigException(key + ": \"" + text + "\" is not a readable file");
        }
    }

    /** Fails unless {@code port} is 0 (any free one) or 1-65535; {@code text} is as it was written. */
    static int checkPort(String key, String text, int port) {
        if (port < 0 || port > 65535) {
            throw new ConfigException(key + ": \"" + text + "\" is not a port number (1-65535, or 0 for any free port)");
        }
        return port;
    }

    /** An upstream's base URL: http or https, a host, no credentials, query or fragment; a trailing slash dropped. */
    static URI url(String key, String text) {
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
}
