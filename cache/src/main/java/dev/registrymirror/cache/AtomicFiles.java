package dev.registrymirror.cache;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;

/**
 * Small files written whole: to a temporary sibling, flushed, then renamed over the target. The
 * temporary files are named {@code .tmp-<run>-*.part}, where {@code run} identifies this process, so
 * that the start-up scan removes those a crash left behind and never one being written.
 */
final class AtomicFiles {
    private AtomicFiles() {
    }

    static void write(Path target, byte[] bytes, String run) throws IOException {
        Path temp = prepare(target, bytes, run);
        try {
            install(temp, target);
        } finally {
            Files.deleteIfExists(temp);
        }
    }

    /** Writes {@code bytes} to a flushed temporary sibling of {@code target}, for {@link #install}. */
    static Path prepare(Path target, byte[] bytes, String run) throws IOException {
        Path temp = Files.createTempFile(target.getParent(), ".tmp-" + run + "-", ".part");
        try (FileChannel ch = FileChannel.open(temp, StandardOpenOption.WRITE)) {
            ByteBuffer buf = ByteBuffer.wrap(bytes);
            while (buf.hasRemaining()) {
                ch.write(buf);
            }
            ch.force(true);
        } catch (IOException e) {
            Files.deleteIfExists(temp);
            throw e;
        }
        return temp;
    }

    /** Renames a prepared file over {@code target}, atomically. */
    static void install(Path temp, Path target) throws IOException {
        Files.move(temp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }

    /** Whether {@code name} is a temporary file of a run other than {@code run}: a crash's leftover. */
    static boolean isLeftover(String name, String run) {
        return name.startsWith(".tmp-") && name.endsWith(".part") && !name.startsWith(".tmp-" + run + "-");
    }
}
