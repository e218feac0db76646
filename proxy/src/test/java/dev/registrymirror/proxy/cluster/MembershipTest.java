package dev.registrymirror.proxy.cluster;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.config.MirrorConfig;
import java.io.IOException;
import java.net.URI;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** Replicas on loopback find each other, a host without the secret cannot join, and a leave is seen. */
class MembershipTest {
    static final String SECRET = "a-cluster-secret-of-forty-characters-xx";
    final List<Membership> started = new ArrayList<>();

    @AfterEach
    void leave() {
        started.forEach(Membership::close);
    }

    static int freePort() {
        return dev.registrymirror.proxy.TestPorts.free();
    }

    static MirrorConfig.Cluster config(int port, List<Integer> ports, String secret) {
        List<String> members = ports.stream().map(p -> "127.0.0.1:" + p).toList();
        return new MirrorConfig.Cluster("test", secret, "127.0.0.1", port, members, null, null,
                URI.create("http://127.0.0.1:" + (port + 1)), 1, Duration.ofSeconds(3));
    }

    Membership join(MirrorConfig.Cluster c) throws Exception {
        Membership m = Membership.join(c);
        started.add(m);
        return m;
    }

    /** Polls the members (JGroups' own threads do the work) until {@code condition} holds, for at most 30 s. */
    static void awaitTrue(String what, BooleanSupplier condition) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (!condition.getAsBoolean()) {
            assertThat(System.nanoTime()).as(what).isLessThan(deadline);
            Thread.sleep(20);
        }
    }

    @Test
    void threeReplicasSeeEachOtherAStrangerWithoutTheSecretIsNotLetInAndALeaveIsSeen() throws Exception {
        List<Integer> ports = List.of(freePort(), freePort(), freePort());
        Membership a = join(config(ports.get(0), ports, SECRET));
        Membership b = join(config(ports.get(1), ports, SECRET));
        Membership c = join(config(ports.get(2), ports, SECRET));
        awaitTrue("all three see three", () -> a.members().size() == 3 && b.members().size() == 3 && c.members().size() == 3);
        assertThat(a.members()).isEqualTo(b.members()).isEqualTo(c.members())
                .contains(a.self(), b.self(), c.self());

        int strangerPort = freePort();
        List<Integer> withStranger = new ArrayList<>(ports);
        withStranger.add(strangerPort);
        Membership stranger = join(config(strangerPort, withStranger, "not-the-cluster-secret-but-long-enough-xx"));
        List<URI> seen = new ArrayList<>();
        a.onChange(seen::addAll);
        // Give the stranger the time a join takes (its discovery and two join attempts).
        awaitTrue("the stranger gave up joining and stands alone", () -> stranger.members().equals(List.of(stranger.self())));
        assertThat(a.members()).hasSize(3).doesNotContain(stranger.self());
        assertThat(seen).doesNotContain(stranger.self());

        c.close();
        started.remove(c);
        awaitTrue("the leave is seen", () -> a.members().size() == 2 && b.members().size() == 2);
        assertThat(a.members()).containsExactlyInAnyOrder(a.self(), b.self());
    }
}
