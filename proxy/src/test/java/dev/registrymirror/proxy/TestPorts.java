package dev.registrymirror.proxy;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Ports for servers a test starts later. A port the kernel hands out for {@code bind(0)} comes from the
 * ephemeral range, the same range outgoing connections take their local ports from: between the probe
 * and the server's bind, a replica's connection attempt (JGroups connects to members not yet up) or an
 * HTTP client can take it, and the server fails with "Address already in use". So ports come from
 * below the ephemeral range (Linux's default starts at 32768), handed out in turn from a random start
 * (tests in other JVMs start elsewhere), each checked free when handed out.
 */
public final class TestPorts {
    private static final int LOW = 20_000;
    private static final int HIGH = 32_000;
    private static final AtomicInteger NEXT = new AtomicInteger(LOW + ThreadLocalRandom.current().nextInt(HIGH - LOW));

    private TestPorts() {
    }

    /** A port nothing listens on and no outgoing connection will take. */
    public static int free() {
        for (int tries = 0; tries < HIGH - LOW; tries++) {
            int port = LOW + Math.floorMod(NEXT.getAndIncrement() - LOW, HIGH - LOW);
            try (ServerSocket s = new ServerSocket()) {
                s.setReuseAddress(false);
                s.bind(new InetSocketAddress(port));
                return port;
            } catch (IOException taken) {
                // in use: the next one
            }
        }
        throw new UncheckedIOException(new IOException("no free port in " + LOW + "-" + HIGH));
    }
}
