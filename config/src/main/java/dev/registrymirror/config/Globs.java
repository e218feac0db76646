package dev.registrymirror.config;

import java.util.concurrent.ConcurrentHashMap;
import java.util.regex.Pattern;

/**
 * Globs over repository names, as the configuration writes them ({@code access.rules},
 * {@code hosted.repositories}): {@code **} spans path components, {@code *} stays within one, the rest
 * is literal.
 */
public final class Globs {
    private static final ConcurrentHashMap<String, Pattern> COMPILED = new ConcurrentHashMap<>();

    private Globs() {
    }

    /** The glob as a regular expression. */
    public static Pattern compile(String glob) {
        StringBuilder re = new StringBuilder();
        for (int i = 0; i < glob.length(); i++) {
            char c = glob.charAt(i);
            if (c == '*' && i + 1 < glob.length() && glob.charAt(i + 1) == '*') {
                re.append(".*");
                i++;
            } else if (c == '*') {
                re.append("[^/]*");
            } else {
                re.append(Pattern.quote(String.valueOf(c)));
            }
        }
        return Pattern.compile(re.toString());
    }

    /** Whether {@code name} matches {@code glob}; globs come from the configuration, so few are compiled. */
    public static boolean matches(String glob, String name) {
        return COMPILED.computeIfAbsent(glob, Globs::compile).matcher(name).matches();
    }
}
