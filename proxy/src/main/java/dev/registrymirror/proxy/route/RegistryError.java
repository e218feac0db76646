package dev.registrymirror.proxy.route;


/**
 * A failure that becomes an OCI error response: HTTP status, error code, message. Inner code fails
 * with one of these; the HTTP handler writes it, in one place.
 */
public final class RegistryError extends RuntimeException {
    private static final long serialVersionUID = 1L;
    /** The header every answer of the registry API carries, errors included ({@code registry/2.0}). */
    public static final String API_VERSION_HEADER = "Docker-Distribution-API-Version";

    public final int status;
    public final String code;
    /** Seconds to send as {@code Retry-After}, or {@code null}. */
    public final String retryAfter;
    /** Metrics label for an upstream failure (connect, timeout, …), or {@code null} for client errors. */
    public final String upstreamReason;
    /** The size of the blob a 416 is about, sent as {@code Content-Range: bytes *}{@code /size}; -1 otherwise. */
    public final long unsatisfiedSize;
    /** The challenge sent as {@code WWW-Authenticate} with a 401, or {@code null}. */
    public final String challenge;
    /**
     * An upload session's {@code Location} and {@code Range} (bytes it has), sent with a 416 about a
     * chunk that does not start where the upload is, so the client knows where to go on; or null.
     */
    public final String uploadLocation;
    public final String uploadRange;

    public RegistryError(int status, String code, String message) {
        this(status, code, message, null, null);
    }

    public RegistryError(int status, String code, String message, String retryAfter, String upstreamReason) {
        this(status, code, message, retryAfter, upstreamReason, -1);
    }

    private RegistryError(int status, String code, String message, String retryAfter, String upstreamReason,
                          long unsatisfiedSize) {
        this(status, code, message, retryAfter, upstreamReason, unsatisfiedSize, null);
    }

    private RegistryError(int status, String code, String message, String retryAfter, String upstreamReason,
                          long unsatisfiedSize, String challenge) {
        this(status, code, message, retryAfter, upstreamReason, unsatisfiedSize, challenge, null, null);
    }

    private RegistryError(int status, String code, String message, String retryAfter, String upstreamReason,
                          long unsatisfiedSize, String challenge, String uploadLocation, String uploadRange) {
        super(message, null, false, false);
        this.uploadLocation = uploadLocation;
        this.uploadRange = uploadRange;
        this.challenge = challenge;
        this.status = status;
        this.code = code;
        this.retryAfter = retryAfter;
        this.upstreamReason = upstreamReason;
        this.unsatisfiedSize = unsatisfiedSize;
    }

    /** A 401 {@code UNAUTHORIZED} with {@code WWW-Authenticate: challenge}. */
    public static RegistryError challenge(String message, String challenge) {
        return new RegistryError(401, "UNAUTHORIZED", message, null, null, -1, challenge);
    }

    /**
     * A 416 for a chunk that does not start where upload {@code location} is; {@code range} is what it
     * has ({@code 0-<last byte>}), sent as {@code Range} with the {@code Location}.
     */
    public static RegistryError misplacedChunk(String message, String location, String range) {
        return new RegistryError(416, "BLOB_UPLOAD_INVALID", message, null, null, -1, null, location, range);
    }

    /** A {@code Range} wholly outside a blob of {@code size} bytes. */
    public static RegistryError rangeNotSatisfiable(long size) {
        return new RegistryError(416, "BLOB_UNKNOWN", "requested range not satisfiable (blob has " + size + " bytes)",
                null, null, size);
    }

    /** The mirror is stopping: new requests, and downloads it abandons, get this. */
    public static RegistryError shuttingDown() {
        return new RegistryError(503, "UNAVAILABLE", "the mirror is shutting down");
    }

    public static RegistryError nameInvalid(String name) {
        return new RegistryError(400, "NAME_INVALID", "invalid repository name: " + name);
    }

    /** A manifest reference that is neither a valid tag nor a valid digest, so names no manifest. */
    public static RegistryError manifestUnknown(String reference) {
        return new RegistryError(404, "MANIFEST_UNKNOWN", "manifest unknown: \"" + reference
                + "\" is neither a tag nor a digest");
    }

    public static RegistryError digestInvalid(String digest) {
        return new RegistryError(400, "DIGEST_INVALID", "invalid digest: " + digest);
    }

    public static RegistryError unsupported(String what) {
        return new RegistryError(405, "UNSUPPORTED", what);
    }

    public static RegistryError unavailable(String upstream, String why, String reason) {
        return new RegistryError(503, "UNAVAILABLE", "upstream " + upstream + " unavailable: " + why, null, reason);
    }

    public static RegistryError badGateway(String upstream, String why, String reason) {
        return new RegistryError(502, "UNAVAILABLE", "upstream " + upstream + ": " + why, null, reason);
    }

    public static RegistryError unauthorized(String upstream, String why) {
        return new RegistryError(401, "UNAUTHORIZED", "upstream " + upstream + " refused access: " + why, null, "auth");
    }

    public static RegistryError tooManyRequests(String upstream, String retryAfter) {
        return new RegistryError(429, "TOOMANYREQUESTS", "upstream " + upstream + " rate limit reached", retryAfter,
                "rate_limited");
    }

    /**
     * Why a cached answer is served instead, as {@code stale_served_total} counts it: rate_limited,
     * unreachable (no connection, or no answer in time) or error. For upstream failures only.
     */
    public String staleReason() {
        return status == 429 ? "rate_limited"
                : "connect".equals(upstreamReason) || "timeout".equals(upstreamReason) ? "unreachable" : "error";
    }

    /** Whether the upstream side failed (as opposed to a bad request or a plain "not found"). */
    public boolean isUpstreamFailure() {
        return upstreamReason != null;
    }
}
