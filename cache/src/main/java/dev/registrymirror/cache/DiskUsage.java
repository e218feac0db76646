package dev.registrymirror.cache;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.function.Predicate;
import java.util.stream.Stream;

/** Bytes held by the files under a folder, as the stores count them at start. */
final class DiskUsage {
    private DiskUsage() {
    }

    /** The total size of the regular files under {@code dir} that {@code counted} accepts. */
    static long bytesUnder(Path dir, Predicate<Path> counted) throws IOException {
        try (Stream<Path> files = Files.walk(dir)) {
            return files.filter(counted).mapToLong(p -> {
                try {
                    BasicFileAttributes a = Files.readAttributes(p, BasicFileAttributes.class);
                    return a.isRegularFile() ? a.size() : 0;
                } catch (IOException e) {
                    return 0; // removed meanwhile
                }
            }).sum();
        } catch (UncheckedIOException e) {
            throw e.getCause();
        }
    }
}
