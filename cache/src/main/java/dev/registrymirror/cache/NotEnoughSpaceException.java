package dev.registrymirror.cache;

import java.io.IOException;

/** The cache's file system has too little free space for what is about to be written. */
public final class NotEnoughSpaceException extends IOException {
    private static final long serialVersionUID = 1L;

    /**
     * @param free   usable bytes on the file system
     * @param needed bytes the write needs, -1 when not known
     */
    public NotEnoughSpaceException(long free, long needed) {
        super("only " + free + " bytes free" + (needed >= 0 ? ", " + needed + " needed" : ""));
    }

    /**
     * Whether {@code t}, or one of its causes, says that the file system is out of space: this
     * exception, or the operating system's ENOSPC or EDQUOT. Java reports those as a plain
     * {@link IOException} whose message is the system's error text (NIO exposes no error number), so
     * for them that text is all there is to go by.
     */
    public static boolean isOutOfSpace(Throwable t) {
        for (Throwable c = t; c != null; c = c.getCause() == c ? null : c.getCause()) {
            if (c instanceof NotEnoughSpaceException) {
                return true;
            }
            String m = c.getMessage();
            if (c instanceof IOException && m != null
                    && (m.contains("No space left on device") || m.contains("Disk quota exceeded"))) {
                return true;
            }
        }
        return false;
    }
}
