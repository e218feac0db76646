package dev.registrymirror.proxy.access;

import static org.assertj.core.api.Assertions.assertThat;

import io.vertx.core.Future;
import io.vertx.core.Vertx;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

class PasswordChecksTest {
    final Vertx vertx = Vertx.vertx();
    final CountDownLatch release = new CountDownLatch(1);
    final List<String> order = Collections.synchronizedList(new ArrayList<>());
    PasswordChecks checks;

    @AfterEach
    void close() throws Exception {
        release.countDown();
        checks.close();
        vertx.close().toCompletionStage().toCompletableFuture().get(10, TimeUnit.SECONDS);
    }

    /** A check that records who it is for and waits until the test lets it finish; only "right" is right. */
    boolean hash(String user, String password) {
        order.add(user);
        try {
            release.await(10, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        return password.equals("right");
    }

    static <T> T await(Future<T> f) throws Exception {
        return f.toCompletionStage().toCompletableFuture().get(10, TimeUnit.SECONDS);
    }

    @Test
    void anAddressThatFailsTooOftenIsRefusedWithoutACheckAndOthersGetTheirTurnAtOnce() throws Exception {
        checks = new PasswordChecks(vertx, this::hash, 10);
        List<Future<Boolean>> flood = new ArrayList<>();
        for (int i = 0; i < 30; i++) {
            flood.add(checks.check("10.0.0.66", "nobody" + i, "wrong"));
        }
        Future<Boolean> other = checks.check("10.0.0.7", "alice", "right");
        long refused = flood.stream().filter(f -> f.failed()
                && ((PasswordChecks.Refused) f.cause()).throttled && f.cause().getMessage()
                .startsWith("too many failed logins from 10.0.0.66")).count();
        assertThat(refused).as("past its 10 failures a minute, refused at once").isEqualTo(20);
        release.countDown();
        assertThat(await(other)).isTrue();
        for (Future<Boolean> f : flood) {
            if (!f.failed()) {
                assertThat(await(f)).isFalse();
            }
        }
        assertThat(order).hasSize(11);
        assertThat(order.indexOf("alice")).as("the other address waited for at most two checks of the flood: " + order)
                .isLessThanOrEqualTo(3);
        Future<Boolean> later = checks.check("10.0.0.66", "alice", "right");
        assertThat(later.failed()).as("its failures are spent").isTrue();
    }

    @Test
    void aSuccessfulCheckCostsTheAddressNothing() throws Exception {
        release.countDown();
        checks = new PasswordChecks(vertx, this::hash, 2);
        for (int i = 0; i < 5; i++) {
            assertThat(await(checks.check("10.0.0.8", "alice", "right"))).isTrue();
        }
        assertThat(await(checks.check("10.0.0.8", "alice", "wrong"))).isFalse();
        assertThat(await(checks.check("10.0.0.8", "alice", "wrong"))).isFalse();
        assertThat(checks.check("10.0.0.8", "alice", "right").failed()).isTrue();
    }

    @Test
    void theQueueIsBoundedForEveryAddressTogether() throws Exception {
        checks = new PasswordChecks(vertx, this::hash, 10);
        int refused = 0;
        for (int i = 0; i < PasswordChecks.MAX_QUEUED + 50; i++) {
            Future<Boolean> f = checks.check("10.1." + (i / 250) + "." + (i % 250), "u", "wrong");
            if (f.failed()) {
                assertThat(((PasswordChecks.Refused) f.cause()).throttled).isFalse();
                assertThat(((PasswordChecks.Refused) f.cause()).error.status).isEqualTo(503);
                refused++;
            }
        }
        assertThat(refused).as("beyond the running checks and " + PasswordChecks.MAX_QUEUED + " waiting")
                .isBetween(50 - PasswordChecks.THREADS, 50);
    }
}
