package dev.registrymirror.proxy.access;

import java.nio.charset.StandardCharsets;
import java.security.InvalidKeyException;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.SecureRandom;
import java.time.Clock;
import java.time.Duration;
import java.util.Base64;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/**
 * The mirror's own bearer tokens: who the client is and until when, signed with HMAC-SHA256 under
 * {@code access.tokenKey} (hashed; replicas that share it accept each other's tokens) or else a key
 * made at start (so a restart ends every token, and clients fetch new ones as they do from Docker Hub). They say nothing of repositories: the rules are applied to each request.
 * Format: {@code base64url(name) "." expiryEpochSeconds "." base64url(hmac)}.
 */
public final class Tokens {
    static final Duration LIFETIME = Duration.ofMinutes(15);
    private static final Base64.Encoder B64 = Base64.getUrlEncoder().withoutPadding();
    private final byte[] key = new byte[32];
    private final Clock clock;

    /** @param secret {@code access.tokenKey}, or null for a key of this process only */
    public Tokens(Clock clock, String secret) {
        if (secret == null) {
            new SecureRandom().nextBytes(key);
        } else {
            System.arraycopy(Secrets.sha256(secret.getBytes(StandardCharsets.UTF_8)), 0, key, 0, key.length);
        }
        this.clock = clock;
    }

    /** A token for {@code name} ({@code ""} for an anonymous client). */
    public String issue(String name) {
        long exp = clock.instant().plus(LIFETIME).getEpochSecond();
        String body = B64.encodeToString(name.getBytes(StandardCharsets.UTF_8)) + "." + exp;
        return body + "." + B64.encodeToString(mac(body));
    }

    /** The name in a valid, unexpired token; {@code null} otherwise. */
    public String verify(String token) {
        int last = token.lastIndexOf('.');
        if (last <= 0) {
            return null;
        }
        String body = token.substring(0, last);
        byte[] given;
        try {
            given = Base64.getUrlDecoder().decode(token.substring(last + 1));
        } catch (IllegalArgumentException e) {
            return null;
        }
        if (!MessageDigest.isEqual(given, mac(body))) {
            return null;
        }
        int dot = body.indexOf('.');
        try {
            if (Long.parseLong(body.substring(dot + 1)) < clock.instant().getEpochSecond()) {
                return null;
            }
            return new String(Base64.getUrlDecoder().decode(body.substring(0, dot)), StandardCharsets.UTF_8);
        } catch (IllegalArgumentException e) {
            return null;
        }
    }

    private byte[] mac(String body) {
        try {
            Mac m = Mac.getInstance("HmacSHA256");
            m.init(new SecretKeySpec(key, "HmacSHA256"));
            return m.doFinal(body.getBytes(StandardCharsets.UTF_8));
        } catch (NoSuchAlgorithmException | InvalidKeyException e) {
            throw new IllegalStateException(e);
        }
    }
}
