package dev.registrymirror.proxy.http;

import dev.registrymirror.config.MirrorConfig;
import dev.registrymirror.metrics.MirrorMetrics;
import io.vertx.core.Vertx;
import io.vertx.core.http.HttpConnection;
import io.vertx.core.http.HttpServerRequest;
import java.lang.management.ManagementFactory;
import java.lang.management.OperatingSystemMXBean;
import java.time.Clock;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Keeps client connections from using up the mirror: a connection whose request head has not
 * arrived {@code server.headerTimeout} after it opened, or that sits idle between requests for
 * {@code server.keepAliveTimeout}, is closed (nginx's {@code client_header_timeout} and
 * {@code keepalive_timeout}); a connection is refused as it opens when its client address already
 * has {@code server.maxConnectionsPerClient}, or when {@code server.maxConnections} are open, which by
 * default leaves a quarter of the process's file descriptors (at least 256) for files and upstream
 * connections. Each is counted, and logged at most every ten seconds per reason.
 *
 * <p>Implementation note: deadlines are read off the injected clock by a sweep twice a second rather
 * than kept in a timer per connection, so tens of thousands of idle connections cost a map entry each.
 * The guard owns each connection's close handler; a request in progress registers with it to hear of
 * the close ({@link #whenClosed}).
 */
public final class ConnectionGuard {
    private static final Logger LOG = LoggerFactory.getLogger(ConnectionGuard.class);
    static final long SWEEP_MILLIS = 500;
    private static final long LOG_EVERY_MILLIS = 10_000;

    /** One open connection: what it is waiting for, and until when. */
    private static final class Tracked {
        final HttpConnection connection;
        final String client;
        /** "header_timeout" while no request has come, "keepalive_timeout" between requests, null while busy. */
        volatile String waiting = "header_timeout";
        volatile long deadline;
        volatile Runnable onClose;

        Tracked(HttpConnection connection, String client, long deadline) {
            this.connection = connection;
            this.client = client;
            this.deadline = deadline;
        }
    }

    private final Clock clock;
    private final MirrorMetrics metrics;
    private final long headerMillis;
    private final long keepAliveMillis;
    private final int maxConnections;
    private final int maxPerClient;
    private final Map<HttpConnection, Tracked> open = new ConcurrentHashMap<>();
    private final ClientCounts perClient = new ClientCounts();
    private final AtomicInteger count = new AtomicInteger();
    private final Map<String, AtomicLong> refusedSinceLog = new ConcurrentHashMap<>();
    private final Map<String, AtomicLong> lastLog = new ConcurrentHashMap<>();
    private long sweeper = -1;

    public ConnectionGuard(MirrorConfig.Server config, Clock clock, MirrorMetrics metrics) {
        this.clock = clock;
        this.metrics = metrics;
        this.headerMillis = config.headerTimeout().toMillis();
        this.keepAliveMillis = config.keepAliveTimeout().toMillis();
        this.maxConnections = config.maxConnections() > 0 ? config.maxConnections() : defaultMaxConnections();
        this.maxPerClient = config.maxConnectionsPerClient();
        metrics.clientConnections(count::get, maxConnections);
    }

    /**
     * The default {@code server.maxConnections}: the process's file-descriptor limit less a quarter of
     * it (at least 256), which stays for stored files, temporary files and upstream connections.
     */
    static int defaultMaxConnections() {
        OperatingSystemMXBean os = ManagementFactory.getOperatingSystemMXBean();
        long limit = os instanceof com.sun.management.UnixOperatingSystemMXBean unix
                ? unix.getMaxFileDescriptorCount() : 4096;
        long reserve = Math.max(256, limit / 4);
        return (int) Math.max(16, Math.min(Integer.MAX_VALUE, limit - reserve));
    }

    /** The most client connections open at once. */
    public int maxConnections() {
        return maxConnections;
    }

    /** Starts the sweep that closes connections past their deadline. */
    public void start(Vertx vertx) {
        sweeper = vertx.setPeriodic(SWEEP_MILLIS, id -> sweep());
    }

    public void stop(Vertx vertx) {
        if (sweeper >= 0) {
            vertx.cancelTimer(sweeper);
        }
    }

    /** A connection opened (the server's connection handler, on its event loop). */
    public void opened(HttpConnection connection) {
        String client = connection.remoteAddress() == null ? "?" : connection.remoteAddress().hostAddress();
        if (count.incrementAndGet() > maxConnections) {
            count.decrementAndGet();
            refuse(connection, client, "limit", maxConnections + " client connections are open (server.maxConnections)");
            return;
        }
        if (!perClient.acquire(client, maxPerClient)) {
            count.decrementAndGet();
            refuse(connection, client, "per_client", client + " has " + maxPerClient
                    + " connections open (server.maxConnectionsPerClient)");
            return;
        }
        Tracked t = new Tracked(connection, client, clock.millis() + headerMillis);
        open.put(connection, t);
        connection.closeHandler(v -> closed(t));
    }

    /** A request's head has arrived: its connection is busy until the response ends. */
    public void requestStarted(HttpServerRequest req) {
        Tracked t = open.get(req.connection());
        if (t != null) {
            t.waiting = null;
        }
    }

    /** The response has ended: the connection idles until the next request. */
    public void requestEnded(HttpServerRequest req) {
        Tracked t = open.get(req.connection());
        if (t != null) {
            t.onClose = null;
            t.deadline = clock.millis() + keepAliveMillis;
            t.waiting = "keepalive_timeout";
        }
    }

    /** Runs {@code action} if the request's connection closes before its response ends. */
    public void whenClosed(HttpServerRequest req, Runnable action) {
        Tracked t = open.get(req.connection());
        if (t != null) {
            t.onClose = action;
        } else {
            req.connection().closeHandler(v -> action.run()); // not tracked (a server without the guard)
        }
    }

    private void closed(Tracked t) {
        if (open.remove(t.connection) == null) {
            return;
        }
        count.decrementAndGet();
        perClient.release(t.client);
        Runnable action = t.onClose;
        if (action != null) {
            action.run();
        }
    }


    /** Closes every connection past its deadline. */
    void sweep() {
        long now = clock.millis();
        for (Tracked t : open.values()) {
            String reason = t.waiting;
            if (reason != null && now >= t.deadline) {
                t.waiting = null; // closed once
                metrics.connectionClosed(reason);
                t.connection.close();
            }
        }
    }

    private void refuse(HttpConnection connection, String client, String reason, String why) {
        metrics.connectionRefused(reason);
        connection.close();
        AtomicLong since = refusedSinceLog.computeIfAbsent(reason, k -> new AtomicLong());
        since.incrementAndGet();
        AtomicLong last = lastLog.computeIfAbsent(reason, k -> new AtomicLong(Long.MIN_VALUE / 2));
        long now = System.currentTimeMillis(); // for the log's pace only
        long before = last.get();
        if (now - before >= LOG_EVERY_MILLIS && last.compareAndSet(before, now)) {
            LOG.warn("refused client connections from {} and others ({} since the last such line): {}", client,
                    since.getAndSet(0), why);
        }
    }
}
