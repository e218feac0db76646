package dev.registrymirror.proxy.blob;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * The in-memory window of a download: what readers can take from memory, what they must read from
 * the file, and that every chunk is freed once neither the window nor a reader holds it.
 */
class DownloadTest {
    static final int CHUNK = 256 * 1024;

    final Download.Budget budget = new Download.Budget(1L << 30);
    final Download d = new Download(Digest.of("sha256", new byte[] {1}), budget);
    final List<ByteBuf> chunks = new ArrayList<>();

    @AfterEach
    void everyChunkIsFreedOnceTheDownloadEnds() {
        d.failed(new RuntimeException("test over")); // a no-op when it already ended
        assertThat(chunks).allMatch(c -> c.refCnt() == 0, "released");
        assertThat(budget.used()).isZero();
    }

    /** Chunk {@code i} holds the byte {@code i} throughout, so a slice shows where it came from. */
    ByteBuf chunk(int i) {
        byte[] fill = new byte[CHUNK];
        java.util.Arrays.fill(fill, (byte) i);
        ByteBuf b = Unpooled.directBuffer(CHUNK, CHUNK).writeBytes(fill);
        chunks.add(b);
        return b;
    }

    void arrive(int count) {
        long at = d.snapshot().available();
        for (int i = 0; i < count; i++) {
            int n = (int) (at / CHUNK);
            d.arrived(at, chunk(n));
            at += CHUNK;
        }
    }

    /** Whether a reader at {@code position} is served from memory (the slice is released at once). */
    boolean inMemory(long position) {
        ByteBuf b = d.take(position, CHUNK);
        if (b == null) {
            return false;
        }
        b.release();
        return true;
    }

    @Test
    void readersTakeArrivedBytesFromMemoryBeforeTheFileHasThem() {
        d.streaming(Path.of("unused"), 4L * CHUNK);
        arrive(2);
        assertThat(d.snapshot().available()).isEqualTo(2L * CHUNK);
        assertThat(d.snapshot().onDisk()).isZero();

        ByteBuf s = d.take(CHUNK + 10, CHUNK);
        assertThat(s.readableBytes()).isEqualTo(CHUNK - 10); // up to the end of the chunk it starts in
        assertThat(s.getByte(s.readerIndex())).isEqualTo((byte) 1);
        s.release();
        ByteBuf capped = d.take(5, 100);
        assertThat(capped.readableBytes()).isEqualTo(100);
        capped.release();
        assertThat(d.take(2L * CHUNK, CHUNK)).as("not arrived yet").isNull();
    }

    @Test
    void writtenChunksLeaveTheWindowBeyondItsSizeAndUnwrittenOnesNeverDo() {
        int total = Download.WINDOW_BYTES / CHUNK * 3;
        d.streaming(Path.of("unused"), (long) total * CHUNK);
        arrive(total);
        d.written(0);
        assertThat(inMemory(0)).as("nothing written: all of it stays").isTrue();

        long half = (long) total / 2 * CHUNK;
        d.written(half);
        // At least WINDOW_BYTES of written chunks stay; everything before them is for the file.
        long windowStart = half - Download.WINDOW_BYTES;
        assertThat(d.take(windowStart - 1, CHUNK)).isNull();
        ByteBuf first = d.take(windowStart, CHUNK);
        assertThat(first).isNotNull();
        assertThat(first.getByte(first.readerIndex())).isEqualTo((byte) (windowStart / CHUNK));
        first.release();
        ByteBuf unwritten = d.take((long) (total - 1) * CHUNK, CHUNK);
        assertThat(unwritten).isNotNull();
        unwritten.release();

        int dropped = (int) (windowStart / CHUNK);
        for (int i = 0; i < chunks.size(); i++) {
            assertThat(chunks.get(i).refCnt()).as("chunk " + i).isEqualTo(i < dropped ? 0 : 1);
        }
    }

    @Test
    void overTheSharedBudgetWrittenChunksLeaveAtOnceAndUnwrittenOnesStay() {
        Download.Budget small = new Download.Budget(3L * CHUNK);
        Download a = new Download(Digest.of("sha256", new byte[] {3}), small);
        Download b = new Download(Digest.of("sha256", new byte[] {4}), small);
        a.streaming(Path.of("unused"), 8L * CHUNK);
        b.streaming(Path.of("unused"), 8L * CHUNK);
        for (int i = 0; i < 2; i++) {
            a.arrived((long) i * CHUNK, chunk(i));
            b.arrived((long) i * CHUNK, chunk(i));
        }
        assertThat(small.used()).isEqualTo(4L * CHUNK); // over: nothing is written yet, so all of it stays
        a.written(CHUNK);
        assertThat(small.used()).isEqualTo(3L * CHUNK);
        assertThat(a.take(0, CHUNK)).as("written, and the budget is spent: read it from the file").isNull();
        ByteBuf unwritten = a.take(CHUNK, CHUNK);
        assertThat(unwritten).isNotNull();
        unwritten.release();
        b.written(2L * CHUNK); // at the limit, not over it: kept
        assertThat(small.used()).isEqualTo(3L * CHUNK);
        ByteBuf kept = b.take(0, CHUNK);
        assertThat(kept).isNotNull();
        kept.release();
        a.failed(new RuntimeException("x"));
        b.failed(new RuntimeException("x"));
        assertThat(small.used()).isZero();
    }

    @Test
    void aChunkLeavingTheWindowIsFreedOnlyWhenItsLastReaderReleasesIt() {
        int total = Download.WINDOW_BYTES / CHUNK + 4;
        d.streaming(Path.of("unused"), (long) total * CHUNK);
        arrive(total);
        ByteBuf held = d.take(0, CHUNK); // a reader's socket has not written it yet
        d.written((long) total * CHUNK);
        assertThat(d.take(0, CHUNK)).isNull();
        assertThat(chunks.get(0).refCnt()).isEqualTo(1);
        assertThat(held.getByte(held.readerIndex() + 7)).isZero();
        held.release();
        assertThat(chunks.get(0).refCnt()).isZero();
    }

    @Test
    void theWindowIsFreedWhenTheDownloadEndsEitherWay() {
        d.streaming(Path.of("unused"), 3L * CHUNK);
        arrive(3);
        d.written(3L * CHUNK);
        d.verified(3L * CHUNK);
        assertThat(inMemory(0)).as("verified: readers may still finish from memory").isTrue();
        d.done(3L * CHUNK);
        assertThat(d.take(0, CHUNK)).as("done: the file has it all").isNull();
        assertThat(d.snapshot().onDisk()).isEqualTo(3L * CHUNK);
        assertThat(chunks).allMatch(c -> c.refCnt() == 0);

        Download other = new Download(Digest.of("sha256", new byte[] {2}), budget);
        other.streaming(Path.of("unused"), 3L * CHUNK);
        ByteBuf c = chunk(0);
        other.arrived(0, c);
        other.failed(new RuntimeException("upstream reset"));
        assertThat(other.take(0, CHUNK)).isNull();
        assertThat(c.refCnt()).isZero();
    }

    @Test
    void aChunkArrivingOutOfPlaceOrAfterTheEndIsReleasedNotKept() {
        d.streaming(Path.of("unused"), 3L * CHUNK);
        ByteBuf gap = chunk(1);
        d.arrived(CHUNK, gap); // position 0 never came
        assertThat(gap.refCnt()).isZero();
        assertThat(d.snapshot().available()).isZero();
        d.failed(new RuntimeException("x"));
        ByteBuf late = chunk(0);
        d.arrived(0, late);
        assertThat(late.refCnt()).isZero();
    }
}
