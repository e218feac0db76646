package dev.registrymirror.proxy.http;

import io.vertx.core.Future;
import io.vertx.core.http.HttpServerRequest;

/**
 * Routes for people rather than registry clients (the admin API, the status page), answered by the
 * same server. {@link RegistryHandler} asks them first; a failed answer with a
 * {@link dev.registrymirror.proxy.route.RegistryError} becomes the usual OCI error body.
 */
public interface OperatorRoutes {

    /** The route's label in the request metrics if {@code req} is one of these routes; {@code null} otherwise. */
    String route(HttpServerRequest req);

    /**
     * Answers a request {@link #route} claimed.
     *
     * @param mayPull whether the caller may pull a repository ({@code <upstream>/<repository>}): what
     *                it may see of it
     */
    Future<Void> serve(HttpServerRequest req, java.util.function.Predicate<String> mayPull);
}
