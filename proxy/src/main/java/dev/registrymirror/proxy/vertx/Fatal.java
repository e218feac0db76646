package dev.registrymirror.proxy.vertx;

import ch.qos.logback.classic.LoggerContext;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * What happens when an {@link Error} (out of memory, a stack overflow, a class that cannot load)
 * reaches any thread of the mirror: it is logged and the process ends with {@link #EXIT_CODE}, so
 * that its supervisor starts a fresh one. A half-alive mirror is the worst case: Docker silently
 * goes around a mirror that fails, and nobody notices that the cache stopped working.
 *
 * <p>The mirror reports here from every place an Error could otherwise vanish: its event loops
 * (Vert.x's exception handler), its blocking work ({@link Blocking}), the storage's own thread, and
 * any other thread (the default uncaught-exception handler that {@link #install} sets).
 */
public final class Fatal {
    private static final Logger LOG = LoggerFactory.getLogger(Fatal.class);
    /** The exit code of a process ended by an Error (EX_SOFTWARE). */
    public static final int EXIT_CODE = 70;

    /** What to do with a fatal error. */
    @FunctionalInterface
    public interface Handler {
        void fatal(String where, Throwable error);
    }

    private static volatile Handler handler = Fatal::endProcess;

    private Fatal() {
    }

    /** Replaces what a fatal error does (tests record it instead of ending their JVM). */
    public static void setHandler(Handler h) {
        handler = h;
    }

    /** Whether {@code t}, or one of its causes, is an {@link Error}. */
    public static boolean isFatal(Throwable t) {
        for (Throwable c = t; c != null; c = c.getCause()) {
            if (c instanceof Error) {
                return true;
            }
            if (c.getCause() == c) {
                break;
            }
        }
        return false;
    }

    /** Reports {@code error}, seen in {@code where}, when it is fatal; true if it was. */
    public static boolean check(String where, Throwable error) {
        if (!isFatal(error)) {
            return false;
        }
        handler.fatal(where, error);
        return true;
    }

    /**
     * Makes every thread without a handler of its own report here: an Error ends the process, any
     * other exception is logged.
     */
    public static void install() {
        Thread.setDefaultUncaughtExceptionHandler((thread, error) -> {
            if (!check("thread " + thread.getName(), error)) {
                LOG.error("uncaught exception on thread {}", thread.getName(), error);
            }
        });
    }

    private static void endProcess(String where, Throwable error) {
        try {
            LOG.error("fatal error in {}; the process ends (exit code {}) so that its supervisor restarts it",
                    where, EXIT_CODE, error);
            if (LoggerFactory.getILoggerFactory() instanceof LoggerContext context) {
                context.stop(); // writes out the lines the asynchronous appender still holds
            }
        } finally {
            // halt, not exit: shutdown hooks would try a graceful stop in a process that is out of memory.
            Runtime.getRuntime().halt(EXIT_CODE);
        }
    }
}
