package dev.registrymirror.cache;

import java.io.IOException;
import java.time.Instant;
import java.util.Optional;

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
