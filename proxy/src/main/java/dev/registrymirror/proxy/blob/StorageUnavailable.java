package dev.registrymirror.proxy.blob;

/**
 * The cache cannot take a blob (disk full, or another write error). Not a client-facing error:
 * a request that has sent nothing yet is answered from the upstream without storing.
 */
public final class StorageUnavailable extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /** The metrics label: {@code disk_full} or {@code io}. */
    public final String reason;

    StorageUnavailable(String message, Throwable cause) {
        super(message, cause, false, false);
        this.reason = isDiskFull(cause) || isDiskFull(this) ? "disk_full" : "io";
    }

    /** Whether {@code t} or one of its causes says the file system is out of space or quota. */
    public static boolean isDiskFull(Throwable t) {
        for (Throwable c = t; c != null; c = c.getCause()) {
            String m = c.getMessage();
            if (m != null && (m.contains("No space left on device") || m.contains("Disk quota exceeded")
                    || m.contains("free for a blob of"))) {
                return true;
            }
        }
        return false;
    }
}
