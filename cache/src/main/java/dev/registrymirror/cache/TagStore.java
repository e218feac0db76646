package dev.registrymirror.cache;

import java.io.IOException;
import java.time.Instant;
import java.util.Comparator;
import java.util.List;
import java.util.Optional;
import java.util.SortedMap;

/**
 * What each tag pointed at when last asked, per upstream and repository, kept on disk so that tag
 * answers survive a restart. Freshness is the caller's decision, from {@link TagEntry#checkedAt}.
 */
public interface TagStore {

    /** The entry if it is in memory; never touches the disk. */
    Optional<TagEntry> cached(TagKey key);

    /** The entry from memory or disk. Blocks. */
    Optional<TagEntry> find(TagKey key) throws IOException;

    /** Records what the tag points at. Blocks. */
    void put(TagKey key, TagEntry entry) throws IOException;

    /** Forgets a tag (it no longer exists upstream). Blocks. */
    void remove(TagKey key) throws IOException;

    /**
     * The {@code upstream/repository} names with at least one tag stored, in {@link #REPOSITORY_ORDER}.
     * Reads the disk: for an operator's listing, not for serving. Blocks.
     */
    List<String> repositories() throws IOException;

    /** The stored tags of one repository, by name. Blocks. */
    SortedMap<String, TagEntry> tags(String upstream, String repository) throws IOException;

    /** Forgets every tag of a repository; yields how many there were. Blocks. */
    int removeRepository(String upstream, String repository) throws IOException;

    /**
     * Repository names compared component by component ({@code a/b} before {@code a-b/c}), so that a
     * listing can be paged by the last name of the page before.
     */
    Comparator<String> REPOSITORY_ORDER = (a, b) -> {
        String[] x = a.split("/");
        String[] y = b.split("/");
        for (int i = 0; i < Math.min(x.length, y.length); i++) {
            int c = x[i].compareTo(y[i]);
            if (c != 0) {
                return c;
            }
        }
        return Integer.compare(x.length, y.length);
    };

    /**
     * Identifies a tag. The parts must already be validated: {@code upstream} a host name,
     * {@code repository} a repository name, {@code tag} a tag, as the distribution spec defines them.
     */
    record TagKey(String upstream, String repository, String tag) {
    }

    /**
     * @param digest    the manifest the tag points at
     * @param mediaType that manifest's media type
     * @param size      that manifest's length in bytes
     * @param checkedAt when the upstream last confirmed it
     */
    record TagEntry(Digest digest, String mediaType, long size, Instant checkedAt) {
        /** The same answer, confirmed again at {@code when}. */
        public TagEntry checked(Instant when) {
            return new TagEntry(digest, mediaType, size, when);
        }
    }
}
