package dev.registrymirror.proxy.cluster;

import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.time.Clock;
import java.util.HexFormat;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/**
 * Signs and checks the internal hop between replicas: a request one replica sends another for
 * content the other owns. The header {@value #HEADER} carries {@code t=<unix seconds>,s=<hex>}, where
 * the signature is an HMAC-SHA256, under a key derived from the cluster's secret, of the time, the
 * method and the request's path and query. A hop is accepted within {@value #WINDOW_SECONDS} seconds
 * of its time, so a captured header is worth little later, and only for the request it was made for.
 */
public final class HopAuth {
    /** The header of a hop. */
    public static final String HEADER = "X-Registry-Mirror-Hop";
    static final long WINDOW_SECONDS = 60;

    private final byte[] key;
    private final Clock clock;

    HopAuth(byte[] key, Clock clock) {
        this.key = key.clone();
        this.clock = clock;
    }

    /** The header value for {@code method uri} (path and query) sent now. */
    public String sign(String method, String uri) {
        long t = clock.instant().getEpochSecond();
        return "t=" + t + ",s=" + HexFormat.of().formatHex(mac(t, method, uri));
    }

    /** Whether {@code header} signs {@code method uri}, within the window. */
    public boolean verify(String header, String method, String uri) {
        if (header == null || !header.startsWith("t=")) {
            return false;
        }
        int comma = header.indexOf(",s=");
        if (comma < 0) {
            return false;
        }
        long t;
        byte[] given;
        try {
            t = Long.parseLong(header.substring(2, comma));
            given = HexFormat.of().parseHex(header.substring(comma + 3));
        } catch (IllegalArgumentException e) {
            return false;
        }
        if (Math.abs(clock.instant().getEpochSecond() - t) > WINDOW_SECONDS) {
            return false;
        }
        return MessageDigest.isEqual(given, mac(t, method, uri));
    }

    private byte[] mac(long t, String method, String uri) {
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(key, "HmacSHA256"));
            return mac.doFinal((t + " " + method + " " + uri).getBytes(StandardCharsets.UTF_8));
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("every JVM has HmacSHA256", e);
        }
    }
}
