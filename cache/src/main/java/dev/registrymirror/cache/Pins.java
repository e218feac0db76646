package dev.registrymirror.cache;

import java.io.InterruptedIOException;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Which items eviction must leave alone, and which it is unlinking: both in memory. A reader pins an
 * item while it sends its file; a commit holds it between its row and its file. A pin notes itself,
 * then checks the item is not being unlinked; eviction notes the unlink, then checks for pins; so one
 * of them always sees the other. A commit of a key being unlinked waits until its old file is gone,
 * or the unlink would take the new file along.
 */
final class Pins {
    private final ConcurrentHashMap<CacheIndex.Key, Integer> pins = new ConcurrentHashMap<>();
    /** Keys whose files eviction is unlinking now; waited on (its monitor) by commits of those keys. */
    private final Set<CacheIndex.Key> unlinking = ConcurrentHashMap.newKeySet();

    /** Keeps eviction off {@code key} until {@link #unpin}. Never blocks. */
    void hold(CacheIndex.Key key) {
        pins.merge(key, 1, Integer::sum);
    }

    /** Ends a {@link #hold}. Never blocks: safe on an event loop. */
    void unpin(CacheIndex.Key key) {
        pins.computeIfPresent(key, (k, n) -> n == 1 ? null : n - 1);
    }

    /** Whether eviction is unlinking {@code key}'s file now (check after {@link #hold}). */
    boolean beingUnlinked(CacheIndex.Key key) {
        return unlinking.contains(key);
    }

    boolean pinned(CacheIndex.Key key) {
        return pins.containsKey(key);
    }

    /**
     * Marks {@code key} as being unlinked, unless it is pinned (before or meanwhile): then false, and
     * nothing is marked.
     */
    boolean markUnlinking(CacheIndex.Key key) {
        if (pins.containsKey(key)) {
            return false;
        }
        unlinking.add(key);
        if (pins.containsKey(key)) { // pinned meanwhile: the pin may not have seen the mark
            unlinked(List.of(key));
            return false;
        }
        return true;
    }

    /** The files of {@code keys} are gone (or stay): commits waiting for them go on. */
    void unlinked(List<CacheIndex.Key> keys) {
        if (keys.isEmpty()) {
            return;
        }
        synchronized (unlinking) {
            keys.forEach(unlinking::remove);
            unlinking.notifyAll(); // stores waiting in awaitUnlinked
        }
    }

    /**
     * Waits until eviction has unlinked the file of {@code key}, if it is doing so: call it before
     * making that key's file appear. Blocks (a worker thread).
     */
    void awaitUnlinked(CacheIndex.Key key) throws InterruptedIOException {
        synchronized (unlinking) {
            while (unlinking.contains(key)) {
                try {
                    unlinking.wait();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new InterruptedIOException("interrupted while " + key + " was being evicted");
                }
            }
        }
    }
}
