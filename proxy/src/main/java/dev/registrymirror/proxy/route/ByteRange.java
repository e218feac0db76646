package dev.registrymirror.proxy.route;

import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * One byte range of a blob, from a {@code Range: bytes=…} header. Only single ranges are honoured;
 * a header that is malformed or names several ranges is ignored (the whole blob is sent), as RFC
 * 9110 allows.
 *
 * @param start first byte
 * @param end   last byte, inclusive
 */
public record ByteRange(long start, long end) {
    private static final Pattern SINGLE = Pattern.compile("bytes=(\\d{0,19})-(\\d{0,19})");

    public long length() {
        return end - start + 1;
    }

    public String contentRange(long size) {
        return "bytes " + start + "-" + end + "/" + size;
    }

    /**
     * The range the header asks for within a blob of {@code size} bytes, or {@code null} for the
     * whole blob.
     *
     * @throws RegistryError 416 when the range lies wholly outside the blob
     */
    public static ByteRange parse(String header, long size) {
        if (header == null) {
            return null;
        }
        Matcher m = SINGLE.matcher(header.trim());
        if (!m.matches() || (m.group(1).isEmpty() && m.group(2).isEmpty())) {
            return null;
        }
        long start;
        long end;
        try {
            if (m.group(1).isEmpty()) {
                long suffix = Long.parseLong(m.group(2));
                if (suffix == 0) {
                    throw unsatisfiable(size);
                }
                start = Math.max(0, size - suffix);
                end = size - 1;
            } else {
                start = Long.parseLong(m.group(1));
                end = m.group(2).isEmpty() ? size - 1 : Math.min(Long.parseLong(m.group(2)), size - 1);
                if (end < start && !m.group(2).isEmpty() && Long.parseLong(m.group(2)) < start) {
                    return null;
                }
            }
        } catch (NumberFormatException e) {
            return null;
        }
        if (start >= size || size == 0) {
            throw unsatisfiable(size);
        }
        return new ByteRange(start, end);
    }

    private static RegistryError unsatisfiable(long size) {
        return RegistryError.rangeNotSatisfiable(size);
    }
}
