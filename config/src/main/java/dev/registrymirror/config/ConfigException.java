package dev.registrymirror.config;

/**
 * A configuration value that cannot be used. The message names the key and the value, e.g.
 * {@code upstreams[0].url: "ftp://x" must be an http:// or https:// URL}.
 */
public final class ConfigException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public ConfigException(String message) {
        super(message);
    }

    public ConfigException(String message, Throwable cause) {
        super(message, cause);
    }
}
