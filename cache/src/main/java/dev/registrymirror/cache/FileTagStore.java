package dev.registrymirror.cache;

import com.github.benmanes.caffeine.cache.Cache;
import com.github.benmanes.caffeine.cache.Caffeine;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.SortedMap;
import java.util.TreeMap;
import java.util.stream.Stream;

/**
 * {@link TagStore} as one small file per tag: {@code tags/<upstream>/<repository>/_tags/<tag>},
 * holding {@code digest size checkedAtMillis mediaType} on one line, separated by tabs. Repository components never
 * start with {@code _}, so the {@code _tags} folder cannot collide with a repository. In front, a
 * Caffeine cache of recent entries.
 */
final class FileTagStore implements TagStore {
    private final Path root;
    private final Cache<TagKey, TagEntry> memory;
    private final String run;

    FileTagStore(Path root, int memoryEntries, String run) throws IOException {
        this.root = root.resolve("tags");
        this.memory = Caffeine.newBuilder().maximumSize(memoryEntries).build();
        this.run = run;
        Files.createDirectories(this.root);
    }

    /** Deletes the temporary files a crash left behind. */
    void scan() throws IOException {
        StorageScan.files(root, Integer.MAX_VALUE, (p, attrs) -> {
            if (AtomicFiles.isLeftover(p.getFileName().toString(), run)) {
                Files.deleteIfExists(p);
            }
        });
    }

    private Path pathOf(TagKey key) {
        return root.resolve(key.upstream()).resolve(key.repository()).resolve("_tags").resolve(key.tag());
    }

    @Override
    public Optional<TagEntry> cached(TagKey key) {
        return Optional.ofNullable(memory.getIfPresent(key));
    }

    @Override
    public Optional<TagEntry> find(TagKey key) throws IOException {
        TagEntry e = memory.getIfPresent(key);
        if (e != null) {
            return Optional.of(e);
        }
        String line;
        try {
            line = Files.readString(pathOf(key), StandardCharsets.UTF_8).trim();
        } catch (NoSuchFileException ex) {
            return Optional.empty();
        }
        String[] parts = line.split("\t", 4);
        try {
            e = new TagEntry(Digest.parse(parts[0]), parts[3], Long.parseLong(parts[1]),
                    Instant.ofEpochMilli(Long.parseLong(parts[2])));
        } catch (RuntimeException bad) {
            Files.deleteIfExists(pathOf(key));
            return Optional.empty();
        }
        memory.put(key, e);
        return Optional.of(e);
    }

    @Override
    public void put(TagKey key, TagEntry entry) throws IOException {
        Path p = pathOf(key);
        Files.createDirectories(p.getParent());
        String line = entry.digest() + "\t" + entry.size() + "\t" + entry.checkedAt().toEpochMilli() + "\t"
                + entry.mediaType() + "\n";
        AtomicFiles.write(p, line.getBytes(StandardCharsets.UTF_8), run);
        memory.put(key, entry);
    }

    @Override
    public void remove(TagKey key) throws IOException {
        memory.invalidate(key);
        Files.deleteIfExists(pathOf(key));
    }

    @Override
    public List<String> repositories() throws IOException {
        List<String> names = new ArrayList<>();
        collect(root, "", names);
        names.sort(REPOSITORY_ORDER);
        return names;
    }

    /** Adds the {@code upstream/repository} names under {@code dir} that have a {@code _tags} folder. */
    private static void collect(Path dir, String prefix, List<String> names) throws IOException {
        List<Path> children;
        try (Stream<Path> list = Files.list(dir)) {
            children = list.filter(Files::isDirectory).toList();
        } catch (NoSuchFileException e) {
            return; // removed meanwhile
        }
        for (Path child : children) {
            String name = child.getFileName().toString();
            if (name.equals("_tags")) {
                if (prefix.indexOf('/') > 0 && hasTag(child)) {
                    names.add(prefix);
                }
            } else {
                collect(child, prefix.isEmpty() ? name : prefix + "/" + name, names);
            }
        }
    }

    private static boolean hasTag(Path tagsFolder) throws IOException {
        try (Stream<Path> list = Files.list(tagsFolder)) {
            return list.anyMatch(p -> !p.getFileName().toString().startsWith("."));
        } catch (NoSuchFileException e) {
            return false;
        }
    }

    @Override
    public SortedMap<String, TagEntry> tags(String upstream, String repository) throws IOException {
        SortedMap<String, TagEntry> tags = new TreeMap<>();
        Path folder = root.resolve(upstream).resolve(repository).resolve("_tags");
        List<String> names;
        try (Stream<Path> list = Files.list(folder)) {
            names = list.map(p -> p.getFileName().toString()).filter(n -> !AtomicFiles.isLeftover(n, run)
                    && !n.startsWith(".")).toList();
        } catch (NoSuchFileException e) {
            return tags;
        }
        for (String tag : names) {
            find(new TagKey(upstream, repository, tag)).ifPresent(e -> tags.put(tag, e));
        }
        return tags;
    }

    @Override
    public int removeRepository(String upstream, String repository) throws IOException {
        int removed = 0;
        for (String tag : tags(upstream, repository).keySet()) {
            TagKey key = new TagKey(upstream, repository, tag);
            memory.invalidate(key);
            if (Files.deleteIfExists(pathOf(key))) {
                removed++;
            }
        }
        return removed;
    }
}
