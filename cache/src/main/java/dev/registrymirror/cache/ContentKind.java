package dev.registrymirror.cache;

/** The two kinds of content the store keeps by digest. */
public enum ContentKind {
    BLOB(0, "blob"), MANIFEST(1, "manifest");

    /** Its number in the index database. */
    final int code;
    private final String label;

    ContentKind(int code, String label) {
        this.code = code;
        this.label = label;
    }

    /** How logs and metrics name it: {@code blob}, {@code manifest}. */
    public String label() {
        return label;
    }

    static ContentKind of(int code) {
        return code == 0 ? BLOB : MANIFEST;
    }
}
