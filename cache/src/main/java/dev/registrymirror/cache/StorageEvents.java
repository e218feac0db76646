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

    /**
     * A task of the storage's own thread (the start-up scan, the upkeep) failed; it has been logged.
     * A failed scan is tried again a minute later. An {@link Error} is passed on too: the owner
     * should end the process, since the storage is then in no known state.
     *
     * @param task {@code scan} or {@code upkeep}
     */
    default void failed(String task, Throwable error) {
    }

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
