package dev.registrymirror.cache;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;

class DigestTest {
    private static final String EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    @Test
    void parsesAndComputes() {
        Digest d = Digest.parse("sha256:" + EMPTY);
        assertThat(d.algorithm()).isEqualTo("sha256");
        assertThat(d).isEqualTo(Digest.of("sha256", new byte[0]));
        assertThat(d.toString()).isEqualTo("sha256:" + EMPTY);
        assertThat(Digest.of("sha512", "x".getBytes(StandardCharsets.UTF_8)).hex()).hasSize(128);
    }

    @Test
    void rejectsAnythingElse() {
        for (String bad : new String[] {"", "sha256", "sha256:", ":" + EMPTY, "sha256:" + EMPTY.toUpperCase(),
                "sha256:" + EMPTY.substring(1), "md5:" + EMPTY, "sha256:../../etc/passwd",
                "sha256:" + EMPTY + "/", "sha512:" + EMPTY}) {
            assertThat(Digest.isValid(bad)).as(bad).isFalse();
            assertThatThrownBy(() -> Digest.parse(bad)).isInstanceOf(IllegalArgumentException.class);
        }
    }
}
