package dev.registrymirror.proxy.hosted;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.registrymirror.cache.Digest;
import dev.registrymirror.cache.HostedStore;
import dev.registrymirror.proxy.manifest.MediaTypes;
import dev.registrymirror.proxy.route.RegistryError;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;

/**
 * What a pushed manifest names, read as a stream of JSON tokens (a 4 MiB manifest may list tens of
 * thousands of layers; no tree of it is built): its media type, the blobs (config and layers) and
 * manifests (an index's) its repository must hold, and for the referrers API its subject, artifact
 * type and annotations. A manifest that is not what its {@code Content-Type} says is refused with
 * {@code MANIFEST_INVALID}.
 */
record PushedManifest(String mediaType, HostedStore.References references) {
    private static final JsonFactory JSON = new JsonFactory();
    private static final ObjectMapper TREES = new ObjectMapper();

    /** Reads {@code bytes}, pushed with {@code contentType}. */
    static PushedManifest read(byte[] bytes, String contentType) {
        String declared = contentType == null ? null : contentType.split(";", 2)[0].trim();
        List<Digest> blobs = new ArrayList<>();
        List<Digest> manifests = new ArrayList<>();
        Digest subject = null;
        String artifactType = null;
        String annotations = null;
        String mediaType = null;
        String configType = null;
        boolean versioned = false;
        try (JsonParser p = JSON.createParser(bytes)) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                throw invalid("not a JSON object");
            }
            while (p.nextToken() == JsonToken.FIELD_NAME) {
                String field = p.currentName();
                JsonToken value = p.nextToken();
                switch (field) {
                    case "schemaVersion" -> versioned = value == JsonToken.VALUE_NUMBER_INT && p.getIntValue() == 2;
                    case "mediaType" -> mediaType = text(p, value, field);
                    case "artifactType" -> artifactType = text(p, value, field);
                    case "config" -> {
                        Descriptor d = descriptor(p, field);
                        blobs.add(d.digest());
                        configType = d.mediaType();
                    }
                    case "layers", "blobs" -> descriptors(p, field, blobs);
                    case "manifests" -> descriptors(p, field, manifests);
                    case "subject" -> subject = descriptor(p, field).digest();
                    case "annotations" -> {
                        if (value != JsonToken.START_OBJECT) {
                            throw invalid("annotations must be an object");
                        }
                        annotations = TREES.readTree(p).toString();
                    }
                    default -> p.skipChildren();
                }
            }
            if (p.currentToken() != JsonToken.END_OBJECT || p.nextToken() != null) {
                throw invalid("trailing data after the JSON object");
            }
        } catch (IOException e) {
            throw invalid("not valid JSON (" + e.getMessage().split("\n", 2)[0] + ")");
        }
        if (!versioned) {
            throw invalid("schemaVersion must be 2");
        }
        String type = mediaType != null ? mediaType : declared;
        if (type == null || !MediaTypes.MANIFESTS.contains(type)) {
            throw invalid("media type " + (type == null ? "(none)" : type) + " is not a manifest media type this"
                    + " registry stores (" + String.join(", ", MediaTypes.MANIFESTS) + ")");
        }
        if (declared != null && mediaType != null && !declared.equals(mediaType)) {
            throw invalid("Content-Type " + declared + " differs from the manifest's mediaType " + mediaType);
        }
        boolean index = type.equals(MediaTypes.OCI_INDEX) || type.equals(MediaTypes.DOCKER_LIST);
        if (!index && configType == null) {
            throw invalid("an image manifest needs a config");
        }
        if (index && !blobs.isEmpty()) {
            throw invalid("an index names manifests, not blobs");
        }
        if (artifactType == null && configType != null && !configType.startsWith("application/vnd.oci.image.config")
                && !configType.startsWith("application/vnd.docker.container.image")) {
            artifactType = configType; // the spec's fallback: the config's media type names the artifact
        }
        return new PushedManifest(type, new HostedStore.References(blobs, manifests, subject, artifactType, annotations));
    }

    private record Descriptor(String mediaType, Digest digest) {
    }

    private static void descriptors(JsonParser p, String field, List<Digest> into) throws IOException {
        if (p.currentToken() != JsonToken.START_ARRAY) {
            throw invalid(field + " must be a list of descriptors");
        }
        while (p.nextToken() == JsonToken.START_OBJECT) {
            into.add(descriptorBody(p, field).digest());
        }
        if (p.currentToken() != JsonToken.END_ARRAY) {
            throw invalid(field + " must be a list of descriptors");
        }
    }

    private static Descriptor descriptor(JsonParser p, String field) throws IOException {
        if (p.currentToken() != JsonToken.START_OBJECT) {
            throw invalid(field + " must be a descriptor");
        }
        return descriptorBody(p, field);
    }

    /** The rest of a descriptor object whose start was read. */
    private static Descriptor descriptorBody(JsonParser p, String field) throws IOException {
        String mediaType = null;
        String digest = null;
        boolean sized = false;
        while (p.nextToken() == JsonToken.FIELD_NAME) {
            String name = p.currentName();
            JsonToken value = p.nextToken();
            switch (name) {
                case "mediaType" -> mediaType = text(p, value, field + ".mediaType");
                case "digest" -> digest = text(p, value, field + ".digest");
                case "size" -> sized = value == JsonToken.VALUE_NUMBER_INT && p.getLongValue() >= 0;
                default -> p.skipChildren();
            }
        }
        if (digest == null || !Digest.isValid(digest)) {
            throw invalid(field + " has a descriptor without a valid digest");
        }
        if (!sized) {
            throw invalid(field + " has a descriptor without a size");
        }
        return new Descriptor(mediaType, Digest.parse(digest));
    }

    private static String text(JsonParser p, JsonToken value, String field) throws IOException {
        if (value != JsonToken.VALUE_STRING) {
            throw invalid(field + " must be a string");
        }
        return p.getText();
    }

    private static RegistryError invalid(String why) {
        return new RegistryError(400, "MANIFEST_INVALID", "manifest invalid: " + why);
    }
}
