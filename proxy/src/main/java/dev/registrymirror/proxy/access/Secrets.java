package dev.registrymirror.proxy.access;

import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;

/** SHA-256 for secrets: compared as hashes with {@link MessageDigest#isEqual}, in time that does not depend on where they differ. */
public final class Secrets {
    private Secrets() {
    }

    public static byte[] sha256(byte[] bytes) {
        try {
            return MessageDigest.getInstance("SHA-256").digest(bytes);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("the JVM has no SHA-256", e);
        }
    }
}
