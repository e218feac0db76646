package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import land.oras.Annotations;
import land.oras.ArtifactType;
import land.oras.Config;
import land.oras.ContainerRef;
import land.oras.LocalPath;
import land.oras.Manifest;
import land.oras.ManifestDescriptor;
import land.oras.Referrers;
import land.oras.Registry;
import land.oras.Subject;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Hosted repositories with ORAS's Java SDK, a third-party OCI client: an artifact pushed and pulled
 * back, an SBOM attached to it with a {@code subject} (as oras attach, cosign and notation do), found
 * through the referrers API with its artifact type and annotations, and the tag list.
 */
class HostedOrasTest extends MirrorTestBase {
    private static final String APP = "application/vnd.example.app.v1";
    private static final String SBOM = "application/vnd.example.sbom.v1+json";

    @TempDir
    Path work;

    @Override
    String topLevelYaml() {
        return """

                hosted: {repositories: ["team/**"]}
                access:
                  rules:
                    - {repositories: ["team/**"], pull: [anonymous], push: [anonymous]}
                    - {repositories: ["**"], pull: [anonymous]}
                """;
    }

    @Test
    void anArtifactAndItsSbomGoThroughOras() throws Exception {
        startMirror();
        String host = "127.0.0.1:" + mirror.port();
        Registry oras = Registry.builder().insecure().build();

        Path app = Files.write(work.resolve("app.bin"), randomBytes(300_000, 1));
        ContainerRef ref = ContainerRef.parse(host + "/team/app:1.0");
        Manifest pushed = oras.pushArtifact(ref, ArtifactType.from(APP), Annotations.empty(), Config.empty(),
                LocalPath.of(app));
        assertThat(oras.getManifest(ref).getDigest()).isEqualTo(pushed.getDigest());

        // An SBOM attached to it: an artifact whose manifest names the app's as its subject.
        Path sbom = Files.writeString(work.resolve("sbom.json"), "{\"packages\":[]}", StandardCharsets.UTF_8);
        ContainerRef sbomRef = ContainerRef.parse(host + "/team/app:sbom");
        Manifest sbomManifest = oras.pushArtifact(sbomRef, ArtifactType.from(SBOM),
                Annotations.ofManifest(Map.of("org.example.kind", "sbom")), Config.empty(), LocalPath.of(sbom))
                .withSubject(Subject.of(pushed.getMediaType(), pushed.getDigest(), pushed.getDescriptor().getSize()));
        // Read back from its JSON: the SDK pushes a manifest's original JSON, which lacks the subject added after.
        Manifest attached = oras.pushManifest(sbomRef, Manifest.fromJson(sbomManifest.toJson()));

        Referrers referrers = oras.getReferrers(ref.withDigest(pushed.getDigest()), ArtifactType.from(SBOM));
        assertThat(referrers.getManifests()).extracting(ManifestDescriptor::getDigest).containsExactly(attached.getDigest());
        ManifestDescriptor d = referrers.getManifests().get(0);
        assertThat(d.getArtifactType()).isEqualTo(SBOM);
        assertThat(d.getAnnotations()).containsEntry("org.example.kind", "sbom");
        assertThat(oras.getReferrers(ref.withDigest(pushed.getDigest()), ArtifactType.from("other/type")).getManifests())
                .isEmpty();

        Path out = Files.createDirectories(work.resolve("pulled"));
        oras.pullArtifact(ref, out, true);
        assertThat(Files.readAllBytes(out.resolve("app.bin"))).isEqualTo(Files.readAllBytes(app));
        assertThat(oras.getTags(ref).tags()).containsExactly("1.0", "sbom");
    }
}
