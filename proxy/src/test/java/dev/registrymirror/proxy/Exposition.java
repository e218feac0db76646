package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** Reading values out of the Prometheus text exposition. */
final class Exposition {
    private Exposition() {
    }

    /** The value of {@code series} (name and labels, exactly as exposed); fails when it is absent. */
    static double value(String exposition, String series) {
        Matcher m = Pattern.compile("^" + Pattern.quote(series) + " (\\S+)$", Pattern.MULTILINE).matcher(exposition);
        assertThat(m.find()).as(series + " in the metrics").isTrue();
        return Double.parseDouble(m.group(1));
    }
}
