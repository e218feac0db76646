package dev.registrymirror.proxy.manifest;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;

class ManifestJsonTest {
    static ManifestJson read(String json) {
        return ManifestJson.read(json.getBytes(StandardCharsets.UTF_8));
    }

    @Test
    void aManifestIsAnObjectWithANumericSchemaVersion() {
        assertThat(read("{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\","
                + "\"manifests\":[{\"mediaType\":\"x\",\"annotations\":{\"a\":[1,{\"b\":null}]}}]}").mediaType())
                .as("nested mediaTypes are not the manifest's").isEqualTo("application/vnd.oci.image.index.v1+json");
        assertThat(read("{\"layers\":[],\"schemaVersion\":2}")).isNotNull();
        assertThat(read("{\"layers\":[],\"schemaVersion\":2}").mediaType()).isNull();
    }

    @Test
    void anythingElseIsNot() {
        assertThat(read("<html>rate limited</html>")).isNull();
        assertThat(read("{\"schemaVersion\":\"2\"}")).as("a string version").isNull();
        assertThat(read("{\"mediaType\":\"x\"}")).isNull();
        assertThat(read("[{\"schemaVersion\":2}]")).isNull();
        assertThat(read("{\"schemaVersion\":2,\"layers\":[}")).as("malformed further on").isNull();
        assertThat(read("{\"schemaVersion\":2} {}")).as("trailing content").isNull();
        assertThat(read("")).isNull();
    }
}
