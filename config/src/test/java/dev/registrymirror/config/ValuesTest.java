package dev.registrymirror.config;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.time.Duration;
import org.junit.jupiter.api.Test;

class ValuesTest {
    @Test
    void durations() {
        assertThat(Values.duration("90s")).isEqualTo(Duration.ofSeconds(90));
        assertThat(Values.duration("1h30m")).isEqualTo(Duration.ofMinutes(90));
        assertThat(Values.duration("250ms")).isEqualTo(Duration.ofMillis(250));
        assertThat(Values.duration("7d")).isEqualTo(Duration.ofDays(7));
        assertThat(Values.duration("0s")).isEqualTo(Duration.ZERO);
        for (String bad : new String[] {"", "5", "m", "5 m", "-5s", "5x", "1h 30m", "5s5"}) {
            assertThatThrownBy(() -> Values.duration(bad)).as(bad).isInstanceOf(IllegalArgumentException.class);
        }
    }

    @Test
    void sizes() {
        assertThat(Values.size("512")).isEqualTo(512);
        assertThat(Values.size("1KiB")).isEqualTo(1024);
        assertThat(Values.size("50GiB")).isEqualTo(50L << 30);
        assertThat(Values.size("2 TiB")).isEqualTo(2L << 40);
        for (String bad : new String[] {"", "20GB", "1.5GiB", "GiB", "99999999999999TiB"}) {
            assertThatThrownBy(() -> Values.size(bad)).as(bad).isInstanceOf(IllegalArgumentException.class);
        }
    }
}
