package dev.registrymirror.proxy.manifest;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import java.io.IOException;

/**
 * What the mirror needs to know of a manifest's JSON, read as a stream of tokens without building a
 * tree: that it is one JSON object with a numeric {@code schemaVersion}, and its {@code mediaType}.
 * A tree of a 4 MiB manifest (tens of thousands of layers) would take tens of megabytes of heap.
 *
 * @param mediaType the top-level {@code mediaType}, or null when it has none
 */
record ManifestJson(String mediaType) {
    private static final JsonFactory JSON = new JsonFactory();

    /** The manifest's shape, or null when {@code bytes} are not a JSON object with a numeric {@code schemaVersion}. */
    static ManifestJson read(byte[] bytes) {
        try (JsonParser p = JSON.createParser(bytes)) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                return null;
            }
            boolean versioned = false;
            String mediaType = null;
            while (p.nextToken() == JsonToken.FIELD_NAME) {
                String field = p.currentName();
                JsonToken value = p.nextToken();
                if (field.equals("schemaVersion")) {
                    versioned = value.isNumeric();
                } else if (field.equals("mediaType")) {
                    mediaType = value == JsonToken.VALUE_STRING ? p.getText() : null;
                }
                p.skipChildren(); // still read, so malformed JSON anywhere is refused
            }
            if (p.currentToken() != JsonToken.END_OBJECT || p.nextToken() != null) {
                return null;
            }
            return versioned ? new ManifestJson(mediaType) : null;
        } catch (IOException e) {
            return null;
        }
    }
}
