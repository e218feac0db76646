package dev.registrymirror.proxy.upstream;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.proxy.route.RegistryError;
import io.vertx.core.Future;
import io.vertx.core.Vertx;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

class BodyMemoryTest {
    final Vertx vertx = Vertx.vertx();

    @AfterEach
    void close() throws Exception {
        vertx.close().toCompletionStage().toCompletableFuture().get(10, TimeUnit.SECONDS);
    }

    static <T> T await(Future<T> f) throws Exception {
        return f.toCompletionStage().toCompletableFuture().get(10, TimeUnit.SECONDS);
    }

    @Test
    void bodiesThatDoNotFitWaitTheirTurnInOrder() throws Exception {
        BodyMemory memory = new BodyMemory(vertx, 100, Duration.ofSeconds(10), 10);
        BodyMemory.Lease a = await(memory.reserve(60));
        Future<BodyMemory.Lease> b = memory.reserve(60);
        Future<BodyMemory.Lease> c = memory.reserve(10);
        assertThat(memory.waiting()).as("c waits behind b though it would fit").isEqualTo(2);
        assertThat(memory.used()).isEqualTo(60);
        a.shrink(30);
        BodyMemory.Lease lb = await(b);
        BodyMemory.Lease lc = await(c);
        assertThat(memory.used()).isEqualTo(100);
        a.release();
        a.release(); // once only
        lb.release();
        lc.release();
        assertThat(memory.used()).isZero();
        assertThat(memory.waiting()).isZero();
    }

    @Test
    void aBodyLargerThanTheLimitIsLetInWhenNothingElseIsHeld() throws Exception {
        BodyMemory memory = new BodyMemory(vertx, 100, Duration.ofSeconds(10), 10);
        BodyMemory.Lease big = await(memory.reserve(500));
        Future<BodyMemory.Lease> small = memory.reserve(1);
        assertThat(memory.waiting()).isEqualTo(1);
        big.release();
        await(small).release();
        assertThat(memory.used()).isZero();
    }

    @Test
    void aBodyThatWaitsTooLongOrFindsTheQueueFullIsRefusedWith503AndRetryAfter() throws Exception {
        BodyMemory full = new BodyMemory(vertx, 100, Duration.ofSeconds(10), 1);
        BodyMemory.Lease all = await(full.reserve(100));
        Future<BodyMemory.Lease> queued = full.reserve(50);
        Future<BodyMemory.Lease> overflow = full.reserve(50);
        assertThat(overflow.failed()).as("refused at once").isTrue();
        RegistryError e = (RegistryError) overflow.cause();
        assertThat(e.status).isEqualTo(503);
        assertThat(e.retryAfter).isEqualTo("1");
        assertThat(e.getMessage()).contains("server.bodyMemory");
        all.release();
        await(queued).release();

        BodyMemory memory = new BodyMemory(vertx, 100, Duration.ofMillis(1), 1);
        BodyMemory.Lease held = await(memory.reserve(100));
        Future<BodyMemory.Lease> waiting = memory.reserve(50);
        Throwable expired = waiting.transform(ar -> Future.succeededFuture(ar.cause())).toCompletionStage()
                .toCompletableFuture().get(10, TimeUnit.SECONDS);
        assertThat(expired).isInstanceOf(RegistryError.class);
        assertThat(((RegistryError) expired).status).isEqualTo(503);
        held.release();
        assertThat(memory.used()).as("the expired one took nothing").isZero();
    }

    @Test
    void leasesGrowInLineAndWhenOnlyThoseWaitingHoldRoomTheFirstGrowsAnyway() throws Exception {
        BodyMemory memory = new BodyMemory(vertx, 100, Duration.ofSeconds(10), 10);
        BodyMemory.Lease a = await(memory.reserve(40));
        BodyMemory.Lease b = await(memory.reserve(40));
        Future<BodyMemory.Lease> c = memory.reserve(40);
        assertThat(memory.waiting()).isEqualTo(1);
        // a and b now both need more, in line behind c: all room is held by those in line, and nobody
        // else would ever give any back, so the first in line is let in beyond the limit.
        Future<Void> aGrows = a.growTo(90);
        Future<Void> bGrows = b.growTo(90);
        BodyMemory.Lease lc = await(c);
        assertThat(memory.used()).as("one body beyond the limit at most").isEqualTo(120);
        lc.release();
        await(aGrows);
        assertThat(memory.used()).isEqualTo(130);
        a.release();
        await(bGrows);
        b.release();
        assertThat(memory.used()).isZero();
        assertThat(memory.waiting()).isZero();
    }

    @Test
    void tokenAnswersHaveRoomOfTheirOwn() throws Exception {
        BodyMemory memory = new BodyMemory(vertx, 4L << 20, Duration.ofSeconds(10), 10);
        BodyMemory.Lease all = await(memory.reserve(4L << 20));
        BodyMemory.Lease token = await(memory.tokens().reserve(256 << 10));
        assertThat(memory.used()).isEqualTo((4L << 20) + (256 << 10));
        token.release();
        all.release();
        assertThat(memory.used()).isZero();
    }
}
