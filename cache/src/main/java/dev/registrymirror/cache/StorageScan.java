package dev.registrymirror.cache;

import java.io.IOException;
import java.nio.file.FileVisitResult;
import java.nio.file.FileVisitor;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.EnumSet;

/** Walks of the storage folders, as the start-up scan makes them. */
final class StorageScan {
    private StorageScan() {
    }

    interface FileConsumer {
        void accept(Path file, BasicFileAttributes attrs) throws IOException;
    }

    /** Calls {@code consumer} for every regular file at most {@code depth} levels under {@code dir}. */
    static void files(Path dir, int depth, FileConsumer consumer) throws IOException {
        if (!Files.isDirectory(dir)) {
            return;
        }
        Files.walkFileTree(dir, EnumSet.noneOf(java.nio.file.FileVisitOption.class), depth,
                new SimpleFileVisitor<>() {
                    @Override
                    public FileVisitResult visitFile(Path file, BasicFileAttributes attrs) throws IOException {
                        if (attrs.isRegularFile()) {
                            consumer.accept(file, attrs);
                        }
                        return FileVisitResult.CONTINUE;
                    }

                    @Override
                    public FileVisitResult visitFileFailed(Path file, IOException e) throws IOException {
                        if (e instanceof NoSuchFileException) {
                            return FileVisitResult.CONTINUE; // removed meanwhile
                        }
                        throw e;
                    }
                });
    }

    /** Deletes {@code dir} and everything under it; quiet about what is already gone. */
    static void deleteTree(Path dir) throws IOException {
        FileVisitor<Path> deleter = new SimpleFileVisitor<>() {
            @Override
            public FileVisitResult visitFile(Path file, BasicFileAttributes attrs) throws IOException {
                Files.deleteIfExists(file);
                return FileVisitResult.CONTINUE;
            }

            @Override
            public FileVisitResult visitFileFailed(Path file, IOException e) throws IOException {
                if (e instanceof NoSuchFileException) {
                    return FileVisitResult.CONTINUE;
                }
                throw e;
            }

            @Override
            public FileVisitResult postVisitDirectory(Path d, IOException e) throws IOException {
                Files.deleteIfExists(d);
                return FileVisitResult.CONTINUE;
            }
        };
        if (Files.exists(dir)) {
            Files.walkFileTree(dir, deleter);
        }
    }
}
