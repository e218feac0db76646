package dev.registrymirror.proxy.access;

import static org.assertj.core.api.Assertions.assertThat;

import at.favre.lib.crypto.bcrypt.BCrypt;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class UsersTest {
    @TempDir
    Path dir;

    static String entry(String user, String password, int cost) {
        return user + ":" + new String(BCrypt.with(BCrypt.Version.VERSION_2Y).hash(cost, password.toCharArray()),
                StandardCharsets.US_ASCII) + "\n";
    }

    @Test
    void unknownUsersCostWhatTheFilesUsersCost() throws Exception {
        // htpasswd -B writes cost 5; a dummy of another cost would tell unknown names from known ones by timing.
        Path file = Files.writeString(dir.resolve("htpasswd"), entry("alice", "a-password", 5) + entry("bob", "b-password", 5)
                + entry("carol", "c-password", 6));
        Users users = new Users(file);
        assertThat(users.dummyCost()).isEqualTo(5);
        assertThat(users.check("mallory", "whatever")).isFalse();
        assertThat(users.check("alice", "a-password")).isTrue();

        Files.writeString(file, entry("alice", "a-password", 7));
        assertThat(users.reloadIfChanged()).isTrue();
        assertThat(users.dummyCost()).as("follows the file").isEqualTo(7);
    }
}
