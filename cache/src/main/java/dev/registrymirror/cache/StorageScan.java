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

    /** A folder of content files that the index lists: what a reconciliation needs of it. */
    interface ContentFolder {
        ContentKind kind();

        /** The folder, holding {@code <algorithm>/<first two hex>/<hex>}. */
        Path folder();

        /** Forgets {@code digest} if its file is missing (checked under the item's lock); yields whether it did. */
        boolean forgetIfMissing(Digest digest) throws IOException;

        /** A file in a fan-out folder not named by a digest (a crash's leftover, say). */
        void otherFile(Path file) throws IOException;
    }

    interface ContentConsumer {
        void accept(Digest digest, BasicFileAttributes attrs) throws IOException;
    }

    /** Where the file for {@code digest} lives under {@code dir}. */
    static Path fanOut(Path dir, Digest digest) {
        return dir.resolve(digest.algorithm()).resolve(digest.hex().substring(0, 2)).resolve(digest.hex());
    }

    /** The digest algorithms whose folders a reconciliation looks at. */
    static final java.util.List<String> ALGORITHMS = java.util.List.of("sha256", "sha512");

    /** The two-hex-digit names of the fan-out folders, 00 to ff. */
    static java.util.List<String> prefixes() {
        java.util.List<String> all = new java.util.ArrayList<>(256);
        for (int i = 0; i < 256; i++) {
            all.add(String.format("%02x", i));
        }
        return all;
    }

    /**
     * Calls {@code content} for every file in the fan-out folder {@code <dir>/<algorithm>/<prefix>}
     * named by a digest that belongs there, and {@code other} for every other regular file in it.
     */
    static void contentFilesIn(Path dir, String algorithm, String prefix, ContentConsumer content,
                               FileConsumer other) throws IOException {
        files(dir.resolve(algorithm).resolve(prefix), 1, (p, attrs) -> {
            String name = p.getFileName().toString();
            String text = algorithm + ":" + name;
            if (name.startsWith(prefix) && Digest.isValid(text)) {
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
