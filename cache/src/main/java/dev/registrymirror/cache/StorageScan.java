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

/**
 * The layout of the content-addressed folders ({@code <algorithm>/<first two hex>/<hex>}) and the
 * walks of the storage folders that the start-up scan makes.
 */
final class StorageScan {
    private StorageScan() {
    }

    interface FileConsumer {
        void accept(Path file, BasicFileAttributes attrs) throws IOException;
    }

    interface ContentConsumer {
        void accept(Digest digest, BasicFileAttributes attrs) throws IOException;
    }

    /** Where the file for {@code digest} lives under {@code dir}. */
    static Path fanOut(Path dir, Digest digest) {
        return dir.resolve(digest.algorithm()).resolve(digest.hex().substring(0, 2)).resolve(digest.hex());
    }

    /**
     * Calls {@code content} for every file under {@code dir} that sits where {@link #fanOut} puts a
     * digest's file, and {@code other} for every other regular file.
     */
    static void contentFiles(Path dir, ContentConsumer content, FileConsumer other) throws IOException {
        files(dir, 3, (p, attrs) -> {
            Path rel = dir.relativize(p);
            String text = rel.getNameCount() == 3 ? rel.getName(0) + ":" + rel.getName(2) : "";
            if (Digest.isValid(text) && fanOut(dir, Digest.parse(text)).equals(p)) {
                content.accept(Digest.parse(text), attrs);
            } else {
                other.accept(p, attrs);
            }
        });
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

    /** Deletes {@code dir} and everything under it; quiet about what is already gone. Yields the files deleted. */
    static int deleteTree(Path dir) throws IOException {
        int[] deleted = {0};
        FileVisitor<Path> deleter = new SimpleFileVisitor<>() {
            @Override
            public FileVisitResult visitFile(Path file, BasicFileAttributes attrs) throws IOException {
                if (Files.deleteIfExists(file)) {
                    deleted[0]++;
                }
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
        return deleted[0];
    }
}
