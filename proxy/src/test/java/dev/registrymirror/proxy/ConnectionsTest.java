package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.Socket;
import java.net.SocketException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * Client connections cannot use the mirror up: idle ones are closed (the injected clock decides
 * when), each address and all of them together are bounded, and what is refused or closed is counted.
 */
class ConnectionsTest extends MirrorTestBase {
    private String serverYaml = "";
    private final List<Socket> sockets = new ArrayList<>();

    @Override
    String serverYaml() {
        return serverYaml;
    }

    @AfterEach
    void closeSockets() throws IOException {
        for (Socket s : sockets) {
            s.close();
        }
    }

    private Socket connect(String from) throws IOException {
        Socket s = new Socket(InetAddress.getByName("127.0.0.1"), mirror.port(), InetAddress.getByName(from), 0);
        s.setSoTimeout(10_000);
        sockets.add(s);
        return s;
    }

    /** Whether the mirror closed {@code s} (it reads the end of the stream, or a reset). */
    private static boolean closedByTheMirror(Socket s) {
        try {
            InputStream in = s.getInputStream();
            while (true) {
                int b = in.read();
                if (b < 0) {
                    return true;
                }
            }
        } catch (SocketException e) {
            return true; // reset
        } catch (IOException e) {
            return false; // timed out: still open
        }
    }

    /**
     * Waits until {@code n} of {@code all} have been closed by the mirror (connections are accepted on
     * several event loops, so which ones are refused is not the order they were opened in), and
     * returns how many are closed then.
     */
    private static int awaitClosed(List<Socket> all, int n) throws IOException {
        List<java.nio.channels.SocketChannel> channels = new ArrayList<>();
        for (Socket s : all) {
            channels.add(s.getChannel());
        }
        java.util.Set<Integer> closed = new java.util.HashSet<>();
        java.nio.ByteBuffer buf = java.nio.ByteBuffer.allocate(1024);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (closed.size() < n && System.nanoTime() < deadline) {
            for (int i = 0; i < channels.size(); i++) {
                if (closed.contains(i)) {
                    continue;
                }
                buf.clear();
                try {
                    if (channels.get(i).read(buf) < 0) {
                        closed.add(i);
                    }
                } catch (IOException e) {
                    closed.add(i); // reset
                }
            }
        }
        return closed.size();
    }

    /** A non-blocking connection from {@code from}, for {@link #awaitClosed}. */
    private Socket channel(String from) throws IOException {
        java.nio.channels.SocketChannel ch = java.nio.channels.SocketChannel.open();
        ch.bind(new java.net.InetSocketAddress(InetAddress.getByName(from), 0));
        ch.connect(new java.net.InetSocketAddress("127.0.0.1", mirror.port()));
        ch.configureBlocking(false);
        sockets.add(ch.socket());
        return ch.socket();
    }

    private double metric(String series) {
        return Exposition.value(mirror.metrics().scrape(), series);
    }

    @Test
    void connectionsThatSendNothingOrHalfARequestLineAreClosedAfterTheHeaderTimeout() throws Exception {
        startMirror();
        List<Socket> idle = new ArrayList<>();
        for (int i = 0; i < 20; i++) {
            Socket s = connect("127.0.0.1");
            if (i % 2 == 1) {
                OutputStream out = s.getOutputStream();
                out.write("GET /v2/library/alpine/blo".getBytes(StandardCharsets.US_ASCII)); // half a request line
                out.flush();
            }
            idle.add(s);
        }
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (metric("registrymirror_client_connections") < 20 && System.nanoTime() < deadline) {
            Thread.onSpinWait();
        }
        assertThat(metric("registrymirror_client_connections")).isEqualTo(20);
        clock.advance(Duration.ofSeconds(59));
        assertThat(metric("registrymirror_connections_closed_total{reason=\"header_timeout\"}")).isZero();
        clock.advance(Duration.ofSeconds(2)); // past server.headerTimeout (60 s, nginx's client_header_timeout)
        for (Socket s : idle) {
            // Before, all of them stayed open for as long as the client liked.
            assertThat(closedByTheMirror(s)).isTrue();
        }
        assertThat(metric("registrymirror_connections_closed_total{reason=\"header_timeout\"}")).isEqualTo(20);
        deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (metric("registrymirror_client_connections") > 0 && System.nanoTime() < deadline) {
            Thread.onSpinWait();
        }
        assertThat(metric("registrymirror_client_connections")).isZero();
        assertThat(get("/v2/").statusCode()).isEqualTo(200);
    }

    @Test
    void anIdleKeepAliveConnectionIsClosedAfterTheKeepAliveTimeoutAndABusyOneIsNot() throws Exception {
        Digest d = hub.putBlob(randomBytes(1000, 1));
        startMirror();
        Socket s = connect("127.0.0.1");
        OutputStream out = s.getOutputStream();
        out.write(("GET /v2/library/alpine/blobs/" + d + " HTTP/1.1\r\nHost: m\r\n\r\n").getBytes(StandardCharsets.US_ASCII));
        out.flush();
        InputStream in = s.getInputStream();
        byte[] head = readUntilBody(in);
        assertThat(new String(head, StandardCharsets.US_ASCII)).startsWith("HTTP/1.1 200");
        assertThat(in.readNBytes(1000)).hasSize(1000);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (mirror.activeRequests() > 0 && System.nanoTime() < deadline) {
            Thread.onSpinWait(); // the client may have every byte before the mirror has seen its response end
        }
        clock.advance(Duration.ofSeconds(70)); // past the header timeout: this one had its request
        assertThat(metric("registrymirror_connections_closed_total{reason=\"header_timeout\"}")).isZero();
        clock.advance(Duration.ofSeconds(6)); // past server.keepAliveTimeout (75 s) since the response
        assertThat(closedByTheMirror(s)).isTrue();
        assertThat(metric("registrymirror_connections_closed_total{reason=\"keepalive_timeout\"}")).isEqualTo(1);
    }

    @Test
    void oneAddressGetsAtMostMaxConnectionsPerClientAndOthersAreStillServed() throws Exception {
        serverYaml = ", maxConnectionsPerClient: 5";
        Digest d = hub.putBlob(randomBytes(5000, 2));
        startMirror();
        assertThat(get("/v2/library/alpine/blobs/" + d).statusCode()).isEqualTo(200); // cached now
        List<Socket> mine = new ArrayList<>();
        for (int i = 0; i < 8; i++) {
            mine.add(channel("127.0.0.2"));
        }
        assertThat(awaitClosed(mine, 3)).isEqualTo(3);
        assertThat(metric("registrymirror_connections_refused_total{reason=\"per_client\"}")).isEqualTo(3);
        assertThat(metric("registrymirror_client_connections")).as("the other five stay open").isGreaterThanOrEqualTo(5);
        // Another address is served as usual, cached blob and all.
        assertThat(get("/v2/library/alpine/blobs/" + d).body()).hasSize(5000);
    }

    @Test
    void overMaxConnectionsNewConnectionsAreRefused() throws Exception {
        serverYaml = ", maxConnections: 4";
        startMirror();
        List<Socket> all = new ArrayList<>();
        for (int i = 0; i < 6; i++) {
            all.add(channel("127.0.0." + (10 + i)));
        }
        assertThat(awaitClosed(all, 2)).isEqualTo(2);
        assertThat(metric("registrymirror_connections_refused_total{reason=\"limit\"}")).isEqualTo(2);
        assertThat(metric("registrymirror_client_connections_limit")).isEqualTo(4);
    }

    @Test
    void thousandsOfIdleConnectionsFromOneHostDoNotStopOthersBeingServed() throws Exception {
        serverYaml = ", maxConnectionsPerClient: 256";
        Digest d = hub.putBlob(randomBytes(100_000, 3));
        startMirror();
        assertThat(get("/v2/library/alpine/blobs/" + d).statusCode()).isEqualTo(200);
        for (int i = 0; i < 2000; i++) {
            connect("127.0.0.3");
        }
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (metric("registrymirror_connections_refused_total{reason=\"per_client\"}") < 2000 - 256
                && System.nanoTime() < deadline) {
            Thread.onSpinWait();
        }
        assertThat(metric("registrymirror_connections_refused_total{reason=\"per_client\"}")).isEqualTo(2000 - 256);
        assertThat(metric("registrymirror_client_connections")).isLessThanOrEqualTo(256 + 2);
        var hit = send(java.net.http.HttpRequest.newBuilder(java.net.URI.create(url("/v2/library/alpine/blobs/" + d)))
                .timeout(Duration.ofSeconds(5)).GET());
        assertThat(hit.body()).hasSize(100_000);
    }

    /** Reads a response head up to its blank line. */
    private static byte[] readUntilBody(InputStream in) throws IOException {
        java.io.ByteArrayOutputStream head = new java.io.ByteArrayOutputStream();
        int matched = 0;
        byte[] end = {'\r', '\n', '\r', '\n'};
        while (matched < 4) {
            int b = in.read();
            if (b < 0) {
                break;
            }
            head.write(b);
            matched = b == end[matched] ? matched + 1 : (b == '\r' ? 1 : 0);
        }
        return head.toByteArray();
    }
}
