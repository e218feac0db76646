package dev.registrymirror.proxy;

import dev.registrymirror.config.ConfigException;
import dev.registrymirror.config.ConfigLoader;
import dev.registrymirror.config.MirrorConfig;
import dev.registrymirror.cache.Storage;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import io.vertx.core.Vertx;
import java.time.Clock;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import ch.qos.logback.classic.LoggerContext;
import org.slf4j.LoggerFactory;
import dev.registrymirror.proxy.vertx.Fatal;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import dev.registrymirror.proxy.operator.PrefetchCommand;

/**
 * {@code java -jar registry-mirror.jar [--config FILE] [--port N] [--storage DIR] [--upstream URL]} runs the
 * mirror; {@code java -jar registry-mirror.jar prefetch --mirror URL IMAGE...} talks to a running one.
 */
@Command(name = "registry-mirror", mixinStandardHelpOptions = true, versionProvider = Main.Version.class,
        description = "A pull-through cache for OCI / Docker registries. Without a command: runs the mirror.",
        subcommands = PrefetchCommand.class)
public final class Main implements Callable<Integer> {
    /** {@code --version}: the pom's version, as the build wrote it. */
    static final class Version implements picocli.CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() {
            return new String[] {"registry-mirror " + Mirror.VERSION};
        }
    }

    @Option(names = "--config", paramLabel = "FILE", description = "YAML config file (default: built-in defaults)")
    Path config;

    @Option(names = "--port", paramLabel = "N", description = "listening port (server.port)")
    Integer port;

    @Option(names = "--storage", paramLabel = "DIR", description = "cache folder (storage.path)")
    String storage;

    @Option(names = "--upstream", paramLabel = "URL", description = "URL of the default (first) upstream")
    String upstream;

    public static void main(String[] args) {
        Fatal.install();
        System.setProperty("vertx.logger-delegate-factory-class-name", "io.vertx.core.logging.SLF4JLogDelegateFactory");
        System.setProperty("vertx.disableDnsResolver", "false");
        int code = new CommandLine(new Main()).execute(args);
        if (code != 0) {
            flushLogs();
            System.exit(code);
        }
    }

    /** Writes out the log lines still queued for the asynchronous appender (see logback.xml). */
    static void flushLogs() {
        if (LoggerFactory.getILoggerFactory() instanceof LoggerContext context) {
            context.stop();
        }
    }

    @Override
    public Integer call() throws InterruptedException {
        Logger log = LoggerFactory.getLogger(Main.class);
        MirrorConfig cfg;
        try {
            String file = config != null ? config.toString() : System.getenv("REGISTRY_MIRROR_CONFIG");
            cfg = ConfigLoader.load(file == null ? null : Path.of(file), System.getenv(),
                    new ConfigLoader.Overrides(port, storage, upstream));
        } catch (ConfigException e) {
            System.err.println("registry-mirror: " + e.getMessage());
            return 2;
        }
        Storage.preload(cfg.storage().path()); // while Vert.x starts
        CountDownLatch stopped = new CountDownLatch(1);
        Vertx vertx = Mirror.newVertx(cfg);
        Mirror mirror;
        try {
            mirror = Mirror.start(vertx, cfg, Clock.systemUTC()).toCompletionStage().toCompletableFuture().get();
        } catch (ExecutionException e) {
            Throwable cause = e.getCause();
            System.err.println("registry-mirror: cannot start: "
                    + (cause instanceof ConfigException ? cause.getMessage() : cause.toString()));
            vertx.close();
            return 1;
        }
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            log.info("shutting down");
            try {
                long bound = cfg.server().shutdownTimeout().toMillis() + 10_000;
                mirror.stop().toCompletionStage().toCompletableFuture().get(bound, TimeUnit.MILLISECONDS);
                vertx.close().toCompletionStage().toCompletableFuture().get(10, TimeUnit.SECONDS);
                log.info("stopped");
            } catch (Exception e) {
                log.warn("shutdown did not finish cleanly: {}", e.toString());
            }
            flushLogs();
            stopped.countDown();
        }, "shutdown"));
        stopped.await();
        return 0;
    }
}
