package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import dev.registrymirror.proxy.manifest.MediaTypes;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Tag lists as the spec says, whatever the upstream does; referrers from the tag schema. */
class TagsAndReferrersTest extends MirrorTestBase {
    private static final List<String> TAGS = List.of("v10", "1.9", "latest", "v2", "A", "1.10", "_x", "a.b", "a-b");

    private List<String> sorted() {
        List<String> s = new ArrayList<>(TAGS);
        s.sort(String::compareTo);
        return s;
    }

    private void putTags() {
        for (String t : TAGS) {
            hub.putImage("team/app", t, randomBytes(10, t.hashCode()));
        }
    }

    private static List<String> tags(HttpResponse<byte[]> r) {
        JsonArray a = new JsonObject(body(r)).getJsonArray("tags");
        List<String> out = new ArrayList<>();
        a.forEach(t -> out.add((String) t));
        return out;
    }

    @Test
    void anUpstreamThatIgnoresNAndLastAndDoesNotSortIsAnsweredAsTheSpecSays() {
        hub.tagsLikeDistribution = true;
        putTags();
        startMirror();
        HttpResponse<byte[]> all = get("/v2/team/app/tags/list");
        assertThat(tags(all)).isEqualTo(sorted());
        assertThat(all.headers().firstValue("Link")).isEmpty();
        assertThat(new JsonObject(body(all)).getString("name")).isEqualTo("team/app");

        HttpResponse<byte[]> first = get("/v2/team/app/tags/list?n=3");
        assertThat(tags(first)).isEqualTo(sorted().subList(0, 3));
        assertThat(first.headers().firstValue("Link"))
                .hasValue("</v2/team/app/tags/list?n=3&last=" + sorted().get(2) + ">; rel=\"next\"");

        // Following the Links visits every tag once, in order.
        List<String> walked = new ArrayList<>();
        String next = "/v2/team/app/tags/list?n=2";
        while (next != null) {
            HttpResponse<byte[]> page = get(next);
            List<String> t = tags(page);
            assertThat(t.size()).isLessThanOrEqualTo(2);
            walked.addAll(t);
            next = page.headers().firstValue("Link").map(l -> l.substring(1, l.indexOf('>'))).orElse(null);
        }
        assertThat(walked).isEqualTo(sorted());

        HttpResponse<byte[]> none = get("/v2/team/app/tags/list?n=0");
        assertThat(tags(none)).isEmpty();
        assertThat(none.headers().firstValue("Link")).isEmpty();

        assertThat(tags(get("/v2/team/app/tags/list?last=latest"))).isEqualTo(List.of("v10", "v2"));
        HttpResponse<byte[]> after = get("/v2/team/app/tags/list?n=1&last=a.b");
        assertThat(tags(after)).isEqualTo(List.of("latest"));
        assertThat(after.headers().firstValue("Link")).hasValue("</v2/team/app/tags/list?n=1&last=latest>; rel=\"next\"");
        HttpResponse<byte[]> end = get("/v2/team/app/tags/list?n=5&last=v10");
        assertThat(tags(end)).isEqualTo(List.of("v2"));
        assertThat(end.headers().firstValue("Link")).isEmpty();
        assertThat(get("/v2/team/app/tags/list?n=x").statusCode()).isEqualTo(400);
        assertThat(get("/v2/team/nothing/tags/list?n=0").statusCode()).isEqualTo(404);
    }

    @Test
    void theLinkKeepsNsAndNeverPointsElsewhere() {
        hub.tagsLinkHost = "elsewhere.example"; // the upstream's Link is absolute, to another host
        putTags();
        startMirror();
        HttpResponse<byte[]> page = get("/v2/team/app/tags/list?n=2&ns=docker.io");
        assertThat(tags(page)).isEqualTo(sorted().subList(0, 2));
        // Before, ?ns= was dropped and an absolute Link to another host was passed through.
        assertThat(page.headers().firstValue("Link"))
                .hasValue("</v2/team/app/tags/list?n=2&last=" + sorted().get(1) + "&ns=docker.io>; rel=\"next\"");
        HttpResponse<byte[]> paged = get("/v2/team/app/tags/list?n=2&last=" + sorted().get(1) + "&ns=docker.io");
        assertThat(tags(paged)).isEqualTo(sorted().subList(2, 4));
    }

    @Test
    void withoutAReferrersApiTheReferrersTagSchemaIsAnswered() {
        Digest subject = hub.putImage("team/app", "1", randomBytes(100, 1));
        Digest other = hub.putImage("team/app", "2", randomBytes(100, 2));
        String cosign = "application/vnd.dev.cosign.artifact.sig.v1+json";
        String sbom = "application/spdx+json";
        JsonObject index = new JsonObject().put("schemaVersion", 2).put("mediaType", MediaTypes.OCI_INDEX)
                .put("manifests", new JsonArray()
                        .add(new JsonObject().put("mediaType", MediaTypes.OCI_MANIFEST).put("digest", "sha256:" + "1".repeat(64))
                                .put("size", 10).put("artifactType", cosign))
                        .add(new JsonObject().put("mediaType", MediaTypes.OCI_MANIFEST).put("digest", "sha256:" + "2".repeat(64))
                                .put("size", 20).put("artifactType", sbom)));
        hub.putManifest("team/app", "sha256-" + subject.hex(), MediaTypes.OCI_INDEX,
                index.encode().getBytes(StandardCharsets.UTF_8));
        startMirror();

        HttpResponse<byte[]> all = get("/v2/team/app/referrers/" + subject);
        assertThat(all.statusCode()).isEqualTo(200);
        assertThat(all.headers().firstValue("Content-Type")).hasValue(MediaTypes.OCI_INDEX);
        // Before, the upstream's 404 (no referrers API) became "supported, none": the signature was hidden.
        assertThat(new JsonObject(body(all)).getJsonArray("manifests")).hasSize(2);

        HttpResponse<byte[]> signatures = get("/v2/team/app/referrers/" + subject + "?artifactType="
                + java.net.URLEncoder.encode(cosign, StandardCharsets.UTF_8));
        assertThat(signatures.headers().firstValue("OCI-Filters-Applied")).hasValue("artifactType");
        JsonArray kept = new JsonObject(body(signatures)).getJsonArray("manifests");
        assertThat(kept).hasSize(1);
        assertThat(kept.getJsonObject(0).getString("artifactType")).isEqualTo(cosign);

        HttpResponse<byte[]> none = get("/v2/team/app/referrers/" + other);
        assertThat(none.statusCode()).isEqualTo(200);
        assertThat(new JsonObject(body(none)).getJsonArray("manifests")).isEmpty();
        assertThat(hub.count("registry", "GET", "/manifests/sha256-" + other.hex())).isEqualTo(1);
    }
}
