package dev.registrymirror.proxy.cluster;

import static org.assertj.core.api.Assertions.assertThat;

import java.net.URI;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

class RingTest {
    static List<URI> members(int n) {
        List<URI> m = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            m.add(URI.create("http://10.0.0." + (i + 1) + ":5000"));
        }
        return m;
    }

    static String key(int i) {
        return "sha256:" + String.format("%064x", i * 2654435761L);
    }

    @Test
    void everyKeyHasOneOwnerAndTheKeysSpreadEvenly() {
        List<URI> three = members(3);
        Map<URI, Integer> owned = new HashMap<>();
        for (int i = 0; i < 30_000; i++) {
            List<URI> owners = Ring.owners(three, key(i), 1);
            assertThat(owners).hasSize(1);
            owned.merge(owners.get(0), 1, Integer::sum);
        }
        assertThat(owned.values()).allMatch(n -> n > 9_000 && n < 11_000);
        assertThat(Ring.owners(List.of(three.get(2), three.get(0), three.get(1)), key(7), 1))
                .as("the order members are listed in does not matter").isEqualTo(Ring.owners(three, key(7), 1));
    }

    @Test
    void aNewMemberTakesAboutAQuarterOfTheKeysOfThreeAndOnlyThose() {
        List<URI> three = members(3);
        List<URI> four = members(4);
        int moved = 0;
        for (int i = 0; i < 20_000; i++) {
            URI before = Ring.owners(three, key(i), 1).get(0);
            URI after = Ring.owners(four, key(i), 1).get(0);
            if (!before.equals(after)) {
                moved++;
                assertThat(after).as("a key moves only to the new member").isEqualTo(four.get(3));
            }
        }
        assertThat(moved).isBetween(4_000, 6_000);
    }

    @Test
    void theSecondCopyIsTheNextInLineAndTakesOverWhenTheOwnerLeaves() {
        List<URI> three = members(3);
        for (int i = 0; i < 1_000; i++) {
            List<URI> owners = Ring.owners(three, key(i), 2);
            assertThat(owners).hasSize(2).doesNotHaveDuplicates();
            List<URI> without = new ArrayList<>(three);
            without.remove(owners.get(0));
            assertThat(Ring.owners(without, key(i), 1)).containsExactly(owners.get(1));
        }
        assertThat(Ring.owners(members(1), key(1), 3)).hasSize(1);
    }
}
