package dev.registrymirror.cache;

/**
 * What the storage tells its owner about itself, for metrics and logs. Called from the storage's
 * own threads; implementations must be quick and thread-safe.
 */
public interface StorageEvents {

    /**
     * Content was removed to respect a limit.
     *
     * @param kind   {@code blob} or {@code manifest}
     * @param reason {@code size} (over {@code maxSize}) or {@code age} (unread for {@code maxAge})
     */
    void evicted(String kind, String reason, long bytes);

    /** A stored file did not match its digest and was deleted. */
    void corruptDropped(String kind);

    /** The start-up scan finished: the index knows every stored file. */
    void indexReady(long items, long bytes, long millis);

    /** Events nobody listens to. */
    StorageEvents NONE = new StorageEvents() {
        @Override
        public void evicted(String kind, String reason, long bytes) {
        }

        @Override
        public void corruptDropped(String kind) {
        }

        @Override
        public void indexReady(long items, long bytes, long millis) {
        }
    };
}
