package dev.registrymirror.cache;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.regex.Pattern;

/**
 * A content digest, {@code algorithm:hex}, as the OCI spec writes it. Only {@code sha256} (64
 * lower-case hex digits) and {@code sha512} (128) are accepted, so a digest is always safe to use
 * as a file name.
 */
public record Digest(String algorithm, String hex) {
    private static final Pattern SHA256 = Pattern.compile("[a-f0-9]{64}");
    private static final Pattern SHA512 = Pattern.compile("[a-f0-9]{128}");

    public Digest {
        boolean ok = switch (algorithm) {
            case "sha256" -> SHA256.matcher(hex).matches();
            case "sha512" -> SHA512.matcher(hex).matches();
            default -> false;
        };
        if (!ok) {
            throw new IllegalArgumentException("not a valid digest: " + algorithm + ":" + hex);
        }
    }

    /**
     * Parses {@code sha256:…}.
     *
     * @throws IllegalArgumentException when the text is not a supported, well-formed digest
     */
    public static Digest parse(String text) {
        int colon = text.indexOf(':');
        if (colon <= 0) {
            throw new IllegalArgumentException("not a valid digest: " + text);
        }
        return new Digest(text.substring(0, colon), text.substring(colon + 1));
    }

    /** Whether {@code text} parses as a digest. */
    public static boolean isValid(String text) {
        try {
            parse(text);
            return true;
        } catch (IllegalArgumentException e) {
            return false;
        }
    }

    /** The digest of {@code bytes} with {@code algorithm}. */
    public static Digest of(String algorithm, byte[] bytes) {
        MessageDigest md = hasher(algorithm);
        return new Digest(algorithm, HexFormat.of().formatHex(md.digest(bytes)));
    }

    /** A fresh hasher for this digest's algorithm. */
    public MessageDigest newHasher() {
        return hasher(algorithm);
    }

    /** Whether a finished hasher's result equals this digest. */
    public boolean matches(byte[] hash) {
        return HexFormat.of().formatHex(hash).equals(hex);
    }

    /** What reading a file back told: how many bytes it has, and whether they hash to the digest. */
    public record FileCheck(long size, boolean matches) {
    }

    /**
     * Reads {@code file} whole and hashes it with this digest's algorithm. Blocks: call it on a hashing
     * thread.
     *
     * @throws java.nio.file.NoSuchFileException when there is no such file
     */
    public FileCheck check(Path file) throws IOException {
        MessageDigest md = newHasher();
        long size = 0;
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            ByteBuffer buf = ByteBuffer.allocateDirect(1 << 20);
            int n;
            while ((n = ch.read(buf)) >= 0) {
                size += n;
                buf.flip();
                md.update(buf);
                buf.clear();
            }
        }
        return new FileCheck(size, matches(md.digest()));
    }

    private static MessageDigest hasher(String algorithm) {
        try {
            return MessageDigest.getInstance(algorithm.equals("sha256") ? "SHA-256" : "SHA-512");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    @Override
    public String toString() {
        return algorithm + ":" + hex;
    }
}
