package dev.registrymirror.proxy.access;

import dev.registrymirror.config.Globs;
import dev.registrymirror.config.MirrorConfig;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Pattern;

/** {@code access.rules}: the first rule whose globs match a repository says who may pull it. */
public final class Rules {
    private record Compiled(List<Pattern> globs, List<String> pull, List<String> push) {
    }

    private final List<Compiled> rules = new ArrayList<>();

    public Rules(List<MirrorConfig.Rule> rules) {
        for (MirrorConfig.Rule r : rules) {
            this.rules.add(new Compiled(r.repositories().stream().map(Globs::compile).toList(), r.pull(), r.push()));
        }
    }

    /**
     * Who may push to hosted repository {@code name}: the first matching rule's list; nobody without
     * rules or past the last rule (anonymous pushes only where a rule names {@code anonymous}).
     */
    public List<String> pushers(String name) {
        Compiled r = firstMatch(name);
        return r == null ? List.of() : r.push();
    }

    /** Who may pull {@code upstream/repository}: the first matching rule's list; everyone without rules; nobody past the last rule. */
    public List<String> pullers(String name) {
        if (rules.isEmpty()) {
            return List.of(Identity.ANONYMOUS);
        }
        Compiled r = firstMatch(name);
        return r == null ? List.of() : r.pull();
    }

    /** The first rule one of whose globs matches {@code name}; null when none does. */
    private Compiled firstMatch(String name) {
        for (Compiled r : rules) {
            for (Pattern g : r.globs()) {
                if (g.matcher(name).matches()) {
                    return r;
                }
            }
        }
        return null;
    }
}
