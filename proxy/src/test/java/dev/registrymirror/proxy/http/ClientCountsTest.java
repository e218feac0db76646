package dev.registrymirror.proxy.http;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;

class ClientCountsTest {

    /**
     * Connections of one address opening and closing on several threads at once: whenever a thread
     * holds a connection, the count is at least one, and at the end it is zero. A release that
     * decremented to zero and then removed the counter could remove it while another thread had just
     * counted a connection on it: that connection was then never counted (the per-address limit leaked).
     */
    @Test
    void countsNeverDriftBelowTheConnectionsOpenWhateverTheInterleaving() throws Exception {
        ClientCounts counts = new ClientCounts();
        int threads = 4;
        int rounds = 500_000;
        AtomicLong undercounted = new AtomicLong();
        CountDownLatch start = new CountDownLatch(1);
        List<Thread> workers = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            Thread w = new Thread(() -> {
                try {
                    start.await();
                } catch (InterruptedException e) {
                    return;
                }
                for (int i = 0; i < rounds; i++) {
                    assertThat(counts.acquire("10.0.0.1", 1_000)).isTrue();
                    if (counts.count("10.0.0.1") < 1) {
                        undercounted.incrementAndGet();
                    }
                    counts.release("10.0.0.1");
                }
            });
            w.start();
            workers.add(w);
        }
        start.countDown();
        for (Thread w : workers) {
            w.join();
        }
        assertThat(undercounted).as("times a held connection was not counted").hasValue(0);
        assertThat(counts.count("10.0.0.1")).isZero();
        assertThat(counts.clients()).isZero();
    }

    @Test
    void theLimitHolds() {
        ClientCounts counts = new ClientCounts();
        assertThat(counts.acquire("a", 2)).isTrue();
        assertThat(counts.acquire("a", 2)).isTrue();
        assertThat(counts.acquire("a", 2)).isFalse();
        assertThat(counts.count("a")).isEqualTo(2);
        assertThat(counts.acquire("b", 2)).isTrue();
        counts.release("a");
        assertThat(counts.acquire("a", 2)).isTrue();
    }
}
