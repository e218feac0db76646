package dev.registrymirror.proxy.access;

import at.favre.lib.crypto.bcrypt.BCrypt;
import com.github.benmanes.caffeine.cache.Cache;
import com.github.benmanes.caffeine.cache.Caffeine;
import dev.registrymirror.config.ConfigException;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The users of an htpasswd file ({@code htpasswd -B}: bcrypt entries only), read again when its
 * contents change. A bcrypt check costs tens of milliseconds of CPU by design, and clients that
 * send Basic credentials send them on every request: a successful check is remembered for five
 * minutes under a SHA-256 of the file entry and the password (never the password itself).
 */
public final class Users {
    private static final Logger LOG = LoggerFactory.getLogger(Users.class);
    private final Path file;
    /** The users' hashes and the dummy unknown users are checked against, replaced together. */
    private record Table(Map<String, byte[]> hashes, byte[] dummy) {
    }

    private volatile Table table;
    private volatile byte[] loaded;
    private final Cache<String, Boolean> verified = Caffeine.newBuilder().maximumSize(10_000)
            .expireAfterWrite(Duration.ofMinutes(5)).build();

    /** Reads the file (blocks); a bad file is a ConfigException naming {@code access.users}. */
    public Users(Path file) {
        this.file = file;
        try {
            byte[] bytes = Files.readAllBytes(file);
            table = table(parse(bytes));
            loaded = Secrets.sha256(bytes);
        } catch (IOException e) {
            throw new ConfigException("access.users: cannot read " + file + ": " + e.getMessage());
        } catch (IllegalArgumentException e) {
            throw new ConfigException("access.users: " + file + ": " + e.getMessage());
        }
    }

    /**
     * The table for {@code hashes}, with a dummy hash of the cost most of them have (the higher on a
     * tie): an unknown user's check then takes as long as a known user's, so that timing does not tell
     * which names exist. {@code htpasswd -B} writes cost 5; a fixed dummy of cost 10 took 7.5 times as long.
     */
    private static Table table(Map<String, byte[]> hashes) {
        Map<Integer, Integer> costs = new HashMap<>();
        for (byte[] h : hashes.values()) {
            costs.merge(costOf(h), 1, Integer::sum);
        }
        int cost = costs.entrySet().stream().max(java.util.Map.Entry.<Integer, Integer>comparingByValue()
                .thenComparing(java.util.Map.Entry.comparingByKey())).map(java.util.Map.Entry::getKey).orElse(5);
        byte[] salt = new byte[16];
        new java.security.SecureRandom().nextBytes(salt);
        byte[] dummy = BCrypt.with(BCrypt.Version.VERSION_2Y).hash(cost, salt, "x".getBytes(StandardCharsets.UTF_8));
        return new Table(hashes, dummy);
    }

    /** The cost of a bcrypt hash ({@code $2y$05$...}). */
    private static int costOf(byte[] hash) {
        return Integer.parseInt(new String(hash, 4, 2, StandardCharsets.US_ASCII));
    }

    static Map<String, byte[]> parse(byte[] bytes) {
        Map<String, byte[]> users = new HashMap<>();
        List<String> lines = new String(bytes, StandardCharsets.UTF_8).lines().toList();
        for (int i = 0; i < lines.size(); i++) {
            String line = lines.get(i).strip();
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            int colon = line.indexOf(':');
            if (colon <= 0) {
                throw new IllegalArgumentException("line " + (i + 1) + " is not <user>:<bcrypt hash>");
            }
            String user = line.substring(0, colon);
            String hash = line.substring(colon + 1);
            if (!hash.matches("\\$2[aby]\\$\\d\\d\\$[./A-Za-z0-9]{53}")) {
                throw new IllegalArgumentException("line " + (i + 1) + " (" + user + ") is not a bcrypt entry;"
                        + " make it with htpasswd -B");
            }
            users.put(user, hash.getBytes(StandardCharsets.US_ASCII));
        }
        return Map.copyOf(users);
    }

    /** Whether {@code password} is {@code user}'s. Blocks for a bcrypt check unless remembered. */
    public boolean check(String user, String password) {
        Table t = table;
        byte[] hash = t.hashes().get(user);
        byte[] pw = password.getBytes(StandardCharsets.UTF_8);
        if (hash == null) {
            BCrypt.verifyer().verify(pw, t.dummy()); // as slow as for a real user
            return false;
        }
        String key = rememberKey(hash, pw);
        if (verified.getIfPresent(key) != null) {
            return true;
        }
        boolean ok = BCrypt.verifyer().verify(pw, hash).verified;
        if (ok) {
            verified.put(key, Boolean.TRUE);
        }
        return ok;
    }

    /**
     * Whether {@code password} is {@code user}'s by a check that succeeded lately: answered from
     * memory with one SHA-256, so safe on an event loop, and no cause to queue for a bcrypt check.
     */
    public boolean remembered(String user, String password) {
        byte[] hash = table.hashes().get(user);
        return hash != null
                && verified.getIfPresent(rememberKey(hash, password.getBytes(StandardCharsets.UTF_8))) != null;
    }

    private static String rememberKey(byte[] hash, byte[] password) {
        return java.util.HexFormat.of().formatHex(Secrets.sha256(concat(hash, password)));
    }

    /** Whether {@code user} is in the file (as last read): a token of a removed user is no good. */
    public boolean exists(String user) {
        return table.hashes().containsKey(user);
    }

    /** The cost of the hash unknown users are checked against. */
    int dummyCost() {
        return costOf(table.dummy());
    }

    /** The user names (for the start-up log line). */
    public int size() {
        return table.hashes().size();
    }

    /** Reads the file again if it changed; a file that cannot be used is logged and the users stay. Blocks. */
    public boolean reloadIfChanged() {
        byte[] bytes;
        try {
            bytes = Files.readAllBytes(file);
        } catch (IOException e) {
            LOG.warn("access.users: cannot read {} ({}); the {} users read before stay", file, e.toString(), size());
            return false;
        }
        byte[] print = Secrets.sha256(bytes);
        if (MessageDigest.isEqual(print, loaded)) {
            return false;
        }
        loaded = print;
        try {
            table = table(parse(bytes));
            verified.invalidateAll();
            LOG.info("access.users: {} changed, {} users", file, size());
            return true;
        } catch (IllegalArgumentException e) {
            LOG.warn("access.users: {} changed but cannot be used ({}); the {} users read before stay", file,
                    e.getMessage(), size());
            return false;
        }
    }

    private static byte[] concat(byte[] a, byte[] b) {
        byte[] out = new byte[a.length + 1 + b.length];
        System.arraycopy(a, 0, out, 0, a.length);
        System.arraycopy(b, 0, out, a.length + 1, b.length);
        return out;
    }

}
