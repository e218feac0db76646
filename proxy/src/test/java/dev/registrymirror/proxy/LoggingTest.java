package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import ch.qos.logback.classic.Logger;
import ch.qos.logback.classic.spi.ILoggingEvent;
import ch.qos.logback.core.read.ListAppender;
import com.github.benmanes.caffeine.cache.Cache;
import com.github.benmanes.caffeine.cache.Caffeine;
import org.junit.jupiter.api.Test;
import org.slf4j.LoggerFactory;

/** Every log line goes through SLF4J and logback, in one format, whoever writes it. */
class LoggingTest {

    @Test
    void caffeinesWarningsReachLogback() {
        ListAppender<ILoggingEvent> seen = new ListAppender<>();
        seen.start();
        Logger root = (Logger) LoggerFactory.getLogger(org.slf4j.Logger.ROOT_LOGGER_NAME);
        root.addAppender(seen);
        try {
            // Caffeine logs a listener's failure as a warning, through System.Logger (java.util.logging by default).
            Cache<String, String> cache = Caffeine.newBuilder().executor(Runnable::run)
                    .removalListener((String k, String v, com.github.benmanes.caffeine.cache.RemovalCause c) -> {
                        throw new IllegalStateException("listener failed");
                    }).build();
            cache.put("k", "v");
            cache.invalidate("k");
        } finally {
            root.detachAppender(seen);
        }
        assertThat(seen.list).anySatisfy(e -> {
            assertThat(e.getLoggerName()).startsWith("com.github.benmanes.caffeine");
            assertThat(e.getLevel().toString()).isEqualTo("WARN");
        });
    }
}
