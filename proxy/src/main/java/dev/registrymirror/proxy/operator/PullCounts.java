package dev.registrymirror.proxy.operator;

import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.LongAdder;

/**
 * Pulls per repository since start (a manifest asked for by tag, answered 200), for the status
 * page's most pulled repositories. At most {@value #MAX_NAMES} names are counted, so that clients
 * naming endless repositories cannot grow it; pulls of further names count as {@code others}.
 * Metrics do not carry repository names: their label values must stay few.
 */
public final class PullCounts {
    static final int MAX_NAMES = 10_000;
    private final Map<String, LongAdder> counts = new ConcurrentHashMap<>();
    private final LongAdder others = new LongAdder();

    /** One pull of {@code upstream/repository}. */
    public void pulled(String name) {
        LongAdder n = counts.get(name);
        if (n == null) {
            if (counts.size() >= MAX_NAMES) {
                others.increment();
                return;
            }
            n = counts.computeIfAbsent(name, k -> new LongAdder());
        }
        n.increment();
    }

    /** A repository and its pulls. */
    public record Count(String name, long pulls) {
    }

    /** The {@code n} most pulled repositories, most first (ties by name). */
    public List<Count> top(int n) {
        return counts.entrySet().stream().map(e -> new Count(e.getKey(), e.getValue().sum()))
                .sorted(Comparator.comparingLong(Count::pulls).reversed().thenComparing(Count::name))
                .limit(n).toList();
    }

    /** Pulls of repositories past the first {@value #MAX_NAMES} names. */
    public long others() {
        return others.sum();
    }
}
