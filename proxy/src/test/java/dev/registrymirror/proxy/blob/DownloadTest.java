package dev.registrymirror.proxy.blob;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.registrymirror.cache.Digest;
import dev.registrymirror.proxy.vertx.Owner;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.vertx.core.Context;
import io.vertx.core.Vertx;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * A download as its readers see it: what they can take from memory, what they must read from the
 * file, that every chunk is counted and freed once neither the window nor a reader holds it, that
 * its state only moves forward, and that only its owner changes it. Each test runs on the owner's
 * event loop, as the download's fetch does.
 */
class DownloadTest {
    static final int CHUNK = 256 * 1024;

    Vertx vertx;
    Context loop;
    final MemoryBudget budget = new MemoryBudget(1L << 30);
    Download d;
    final List<ByteBuf> chunks = new ArrayList<>();

    @BeforeEach
    void onAnEventLoop() {
        vertx = Vertx.vertx();
        loop = vertx.getOrCreateContext();
        d = on(() -> new Download(Digest.of("sha256", new byte[] {1}), Owner.current(), budget, "test/repo"));
    }

    @AfterEach
    void everyChunkIsFreedOnceTheDownloadEnds() throws Exception {
        on(() -> {
            d.failed(new RuntimeException("test over")); // a no-op when it already ended
            return null;
        });
        assertThat(chunks).allMatch(c -> c.refCnt() == 0, "released");
        assertThat(budget.used()).isZero();
        vertx.close().toCompletionStage().toCompletableFuture().get(10, TimeUnit.SECONDS);
    }

    /** Runs {@code body} on the owner's event loop and returns what it returns (or throws what it throws). */
    <T> T on(java.util.concurrent.Callable<T> body) {
        CompletableFuture<T> result = new CompletableFuture<>();
        loop.runOnContext(v -> {
            try {
                result.complete(body.call());
            } catch (Throwable t) {
                result.completeExceptionally(t);
            }
        });
        try {
            return result.get(10, TimeUnit.SECONDS);
        } catch (java.util.concurrent.ExecutionException e) {
            if (e.getCause() instanceof RuntimeException r) {
                throw r;
            }
            if (e.getCause() instanceof Error err) {
                throw err;
            }
            throw new IllegalStateException(e.getCause());
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    void run(Runnable body) {
        on(() -> {
            body.run();
            return null;
        });
    }

    /** Chunk {@code i} holds the byte {@code i} throughout, so a slice shows where it came from. */
    Download.Chunk chunk(long position, int i, MemoryBudget b) {
        byte[] fill = new byte[CHUNK];
        java.util.Arrays.fill(fill, (byte) i);
        ByteBuf buf = Unpooled.directBuffer(CHUNK, CHUNK).writeBytes(fill);
        chunks.add(buf);
        return new Download.Chunk(position, buf, b, 1); // the window's reference only
    }

    void arrive(Download to, int count) {
        long at = to.snapshot().available();
        for (int i = 0; i < count; i++) {
            to.arrived(chunk(at, (int) (at / CHUNK), budget));
            at += CHUNK;
        }
    }

    /** Whether a reader at {@code position} is served from memory (the piece is released at once). */
    boolean inMemory(long position) {
        Pump.Piece p = d.take(position, CHUNK);
        if (p == null) {
            return false;
        }
        p.release().run();
        return true;
    }

    @Test
    void readersTakeArrivedBytesFromMemoryBeforeTheFileHasThem() {
        run(() -> {
            d.streaming(Path.of("unused"), 4L * CHUNK);
            arrive(d, 2);
        });
        assertThat(d.snapshot().available()).isEqualTo(2L * CHUNK);
        assertThat(d.snapshot().onDisk()).isZero();

        Pump.Piece s = d.take(CHUNK + 10, CHUNK); // readers take from any thread
        assertThat(s.length()).isEqualTo(CHUNK - 10); // up to the end of the chunk it starts in
        assertThat(s.bytes().getByte(s.bytes().readerIndex())).isEqualTo((byte) 1);
        s.release().run();
        Pump.Piece capped = d.take(5, 100);
        assertThat(capped.length()).isEqualTo(100);
        capped.release().run();
        assertThat(d.take(2L * CHUNK, CHUNK)).as("not arrived yet").isNull();
    }

    @Test
    void writtenChunksLeaveTheWindowBeyondItsSizeAndUnwrittenOnesNeverDo() {
        int total = Download.WINDOW_BYTES / CHUNK * 3;
        run(() -> {
            d.streaming(Path.of("unused"), (long) total * CHUNK);
            arrive(d, total);
            d.written(0);
        });
        assertThat(inMemory(0)).as("nothing written: all of it stays").isTrue();

        long half = (long) total / 2 * CHUNK;
        run(() -> d.written(half));
        // At least WINDOW_BYTES of written chunks stay; everything before them is for the file.
        long windowStart = half - Download.WINDOW_BYTES;
        assertThat(d.take(windowStart - 1, CHUNK)).isNull();
        Pump.Piece first = d.take(windowStart, CHUNK);
        assertThat(first).isNotNull();
        assertThat(first.bytes().getByte(first.bytes().readerIndex())).isEqualTo((byte) (windowStart / CHUNK));
        first.release().run();
        assertThat(inMemory((long) (total - 1) * CHUNK)).as("unwritten").isTrue();

        int dropped = (int) (windowStart / CHUNK);
        for (int i = 0; i < chunks.size(); i++) {
            assertThat(chunks.get(i).refCnt()).as("chunk " + i).isEqualTo(i < dropped ? 0 : 1);
        }
        assertThat(budget.used()).isEqualTo((long) (total - dropped) * CHUNK);
    }

    @Test
    void overTheSharedBudgetWrittenChunksLeaveAtOnceAndUnwrittenOnesStay() {
        MemoryBudget small = new MemoryBudget(3L * CHUNK);
        Download a = on(() -> new Download(Digest.of("sha256", new byte[] {3}), Owner.current(), small, "test/repo"));
        Download b = on(() -> new Download(Digest.of("sha256", new byte[] {4}), Owner.current(), small, "test/repo"));
        run(() -> {
            a.streaming(Path.of("unused"), 8L * CHUNK);
            b.streaming(Path.of("unused"), 8L * CHUNK);
            for (int i = 0; i < 2; i++) {
                a.arrived(chunk((long) i * CHUNK, i, small));
                b.arrived(chunk((long) i * CHUNK, i, small));
            }
        });
        assertThat(small.used()).isEqualTo(4L * CHUNK); // over: nothing is written yet, so all of it stays
        run(() -> a.written(CHUNK));
        assertThat(small.used()).isEqualTo(3L * CHUNK);
        assertThat(a.take(0, CHUNK)).as("written, and the budget is spent: read it from the file").isNull();
        Pump.Piece unwritten = a.take(CHUNK, CHUNK);
        assertThat(unwritten).isNotNull();
        unwritten.release().run();
        run(() -> b.written(2L * CHUNK)); // at the limit, not over it: kept
        assertThat(small.used()).isEqualTo(3L * CHUNK);
        Pump.Piece kept = b.take(0, CHUNK);
        assertThat(kept).isNotNull();
        kept.release().run();
        run(() -> {
            a.failed(new RuntimeException("x"));
            b.failed(new RuntimeException("x"));
        });
        assertThat(small.used()).isZero();
    }

    @Test
    void aChunkLeavingTheWindowIsCountedAndKeptUntilItsLastReaderReleasesIt() {
        int total = Download.WINDOW_BYTES / CHUNK + 4;
        run(() -> {
            d.streaming(Path.of("unused"), (long) total * CHUNK);
            arrive(d, total);
        });
        Pump.Piece held = d.take(0, CHUNK); // a slow reader's socket has not written it yet
        run(() -> d.written((long) total * CHUNK));
        assertThat(d.take(0, CHUNK)).isNull();
        assertThat(chunks.get(0).refCnt()).isEqualTo(1);
        // Out of the window but still in memory for that socket: still counted (it used not to be).
        assertThat(budget.used()).isEqualTo((long) (Download.WINDOW_BYTES / CHUNK + 1) * CHUNK);
        assertThat(held.bytes().getByte(held.bytes().readerIndex() + 7)).isZero();
        held.release().run();
        assertThat(chunks.get(0).refCnt()).isZero();
        assertThat(budget.used()).isEqualTo((long) (Download.WINDOW_BYTES / CHUNK) * CHUNK);
    }

    @Test
    void theWindowIsFreedWhenTheDownloadEndsEitherWay() {
        run(() -> {
            d.streaming(Path.of("unused"), 3L * CHUNK);
            arrive(d, 3);
            d.written(3L * CHUNK);
            d.verified(3L * CHUNK);
        });
        assertThat(inMemory(0)).as("verified: readers may still finish from memory").isTrue();
        run(() -> d.done(3L * CHUNK));
        assertThat(d.take(0, CHUNK)).as("done: the file has it all").isNull();
        assertThat(d.snapshot().onDisk()).isEqualTo(3L * CHUNK);
        assertThat(chunks).allMatch(c -> c.refCnt() == 0);

        Download other = on(() -> new Download(Digest.of("sha256", new byte[] {2}), Owner.current(), budget, "test/repo"));
        Download.Chunk c = on(() -> {
            other.streaming(Path.of("unused"), 3L * CHUNK);
            Download.Chunk first = chunk(0, 0, budget);
            other.arrived(first);
            other.failed(new RuntimeException("upstream reset"));
            return first;
        });
        assertThat(other.take(0, CHUNK)).isNull();
        assertThat(c.bytes.refCnt()).isZero();
    }

    @Test
    void aChunkArrivingOutOfPlaceOrAfterTheEndIsReleasedNotKept() {
        run(() -> {
            d.streaming(Path.of("unused"), 3L * CHUNK);
            d.arrived(chunk(CHUNK, 1, budget)); // position 0 never came
        });
        assertThat(chunks.get(0).refCnt()).isZero();
        assertThat(d.snapshot().available()).isZero();
        run(() -> {
            d.failed(new RuntimeException("x"));
            d.arrived(chunk(0, 0, budget));
        });
        assertThat(chunks.get(1).refCnt()).isZero();
    }

    @Test
    void nothingLeavesFailedNotEvenAStartWhoseUpstreamAnsweredAfterACancel() {
        // The mirror stops while the upstream is still being asked: the download fails at once.
        d.cancel();
        assertThat(on(() -> d.snapshot().state())).isEqualTo(Download.State.FAILED);
        // Then the upstream answers: the fetch must not bring the download back to life (it used to).
        assertThat(on(() -> d.streaming(Path.of("unused"), CHUNK))).isFalse();
        run(() -> {
            d.verified(CHUNK);
            d.done(CHUNK);
        });
        Download.Snapshot s = d.snapshot();
        assertThat(s.state()).isEqualTo(Download.State.FAILED);
        assertThat(s.failure()).hasMessageContaining("shutting down");
    }

    @Test
    void onlyItsOwnersEventLoopChangesIt() {
        CompletableFuture<Throwable> thrown = new CompletableFuture<>();
        Vertx second = Vertx.vertx(); // another event loop for certain

        try {
            second.runOnContext(v -> {
                try {
                    d.streaming(Path.of("unused"), CHUNK);
                    thrown.complete(null);
                } catch (Throwable t) {
                    thrown.complete(t);
                }
            });
            assertThat(thrown.get(10, TimeUnit.SECONDS)).isInstanceOf(AssertionError.class)
                    .hasMessageContaining("owned by");
            assertThatThrownBy(() -> d.failed(new RuntimeException("from the test thread")))
                    .isInstanceOf(AssertionError.class);
        } catch (Exception e) {
            throw new IllegalStateException(e);
        } finally {
            second.close();
        }
    }
}
