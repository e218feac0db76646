package dev.registrymirror.proxy.blob;

import dev.registrymirror.cache.NotEnoughSpaceException;

/**
 * The cache cannot take a blob (disk full, or another write error). Not a client-facing error:
 * a request that has sent nothing yet is answered from the upstream without storing.
 */
public final class StorageUnavailable extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /** The metrics label: {@code disk_full} or {@code io}. */
    final String reason;

    StorageUnavailable(String message, Throwable cause) {
        super(message, cause, false, false);
        this.reason = NotEnoughSpaceException.isOutOfSpace(cause) ? "disk_full" : "io";
    }
}
