package dev.registrymirror.proxy.http;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Connections open per client address, up to a limit each. Connections open and close on every event
 * loop at once, so each change is one atomic update of the address's entry ({@code compute}): a
 * counter decremented to zero and then removed in a second step could be removed just after another
 * thread had counted a connection on it, and that connection would never be counted.
 */
final class ClientCounts {
    private final Map<String, Integer> counts = new ConcurrentHashMap<>();

    /** Counts one more connection of {@code client}, unless it has {@code max} open already: then false. */
    boolean acquire(String client, int max) {
        boolean[] counted = {false};
        counts.compute(client, (k, n) -> {
            int now = n == null ? 0 : n;
            if (now >= max) {
                return n;
            }
            counted[0] = true;
            return now + 1;
        });
        return counted[0];
    }

    /** One connection of {@code client} closed. */
    void release(String client) {
        counts.computeIfPresent(client, (k, n) -> n <= 1 ? null : n - 1);
    }

    /** Connections of {@code client} open now. */
    int count(String client) {
        return counts.getOrDefault(client, 0);
    }

    /** Clients with connections open. */
    int clients() {
        return counts.size();
    }
}
