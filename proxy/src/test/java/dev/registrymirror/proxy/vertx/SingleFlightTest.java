package dev.registrymirror.proxy.vertx;

import static org.assertj.core.api.Assertions.assertThat;

import io.vertx.core.Future;
import io.vertx.core.Promise;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

class SingleFlightTest {

    @Test
    void callersArrivingMeanwhileShareOneRun() {
        SingleFlight<String, Integer> flights = new SingleFlight<>();
        AtomicInteger runs = new AtomicInteger();
        Promise<Integer> work = Promise.promise();
        Future<Integer> first = flights.run("k", () -> {
            runs.incrementAndGet();
            return work.future();
        });
        Future<Integer> second = flights.run("k", () -> {
            runs.incrementAndGet();
            return Future.succeededFuture(2);
        });
        work.complete(1);
        assertThat(first.result()).isEqualTo(1);
        assertThat(second.result()).isEqualTo(1);
        assertThat(runs).hasValue(1);
        assertThat(flights.run("k", () -> Future.succeededFuture(3)).result()).isEqualTo(3);
    }

    @Test
    void aSupplierThatThrowsFailsItsCallersAndFreesTheKey() {
        SingleFlight<String, Integer> flights = new SingleFlight<>();
        Future<Integer> failed = flights.run("k", () -> {
            throw new IllegalStateException("boom");
        });
        assertThat(failed.failed()).isTrue();
        assertThat(failed.cause()).hasMessage("boom");
        // The key used to stay taken by a future that never completed.
        Future<Integer> next = flights.run("k", () -> Future.succeededFuture(7));
        assertThat(next.isComplete()).isTrue();
        assertThat(next.result()).isEqualTo(7);
    }
}
