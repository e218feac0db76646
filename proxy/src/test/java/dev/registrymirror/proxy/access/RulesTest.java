package dev.registrymirror.proxy.access;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.config.MirrorConfig;
import java.util.List;
import org.junit.jupiter.api.Test;

class RulesTest {
    @Test
    void anUpstreamWithAPortIsMatchedByItsName() {
        Rules rules = new Rules(List.of(new MirrorConfig.Rule(List.of("lab.local:5000/private/**"), List.of("alice")),
                new MirrorConfig.Rule(List.of("**"), List.of("anonymous"))));
        assertThat(rules.pullers("lab.local:5000/private/app")).containsExactly("alice");
        assertThat(rules.pullers("lab.local:5000/public/app")).containsExactly("anonymous");
        assertThat(rules.pullers("lab.local:50001/private/app")).containsExactly("anonymous");
    }

    @Test
    void oneStarStaysWithinAComponent() {
        Rules rules = new Rules(List.of(new MirrorConfig.Rule(List.of("docker.io/acme/*"), List.of("bob"))));
        assertThat(rules.pullers("docker.io/acme/app")).containsExactly("bob");
        assertThat(rules.pullers("docker.io/acme/team/app")).as("past the last rule: nobody").isEmpty();
    }
}
