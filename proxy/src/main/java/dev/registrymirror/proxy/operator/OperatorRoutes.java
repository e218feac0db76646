package dev.registrymirror.proxy.operator;

import io.vertx.core.Future;
import io.vertx.core.Handler;
import io.vertx.ext.web.Router;
import io.vertx.ext.web.RoutingContext;
import java.util.function.Predicate;

/**
 * The endpoints for people rather than registry clients, as one routing table: the admin API and the
 * status page. The HTTP side guards each route ({@link Guard}: the access rules, the request
 * metrics, the one writer of error answers); what is here only answers.
 *
 * <pre>
 * POST   /admin/prefetch                          start a prefetch job
 * GET    /admin/prefetch                          the last jobs
 * GET    /admin/prefetch/:id                      one job
 * GET    /admin/repositories                      the cached repositories, paged (n, last)
 * GET    /admin/repositories/&lt;upstream&gt;/&lt;repo&gt;    one repository's tags
 * DELETE /admin/repositories/&lt;upstream&gt;/&lt;repo&gt;    forget its tags (?tag= for one)
 * DELETE /admin/digests/:digest                   remove a blob and/or manifest
 * GET    /admin/hosted                            hosted repositories, bytes, quota, open uploads
 * POST   /admin/hosted/gc                         garbage-collect hosted content now
 * GET    /status, and / with Accept: text/html     the status page
 * GET    /status/status.js, /status/status.css    its script and style
 * GET    /status.json                             its data
 * </pre>
 */
public final class OperatorRoutes {
    /** Whose list decides who may call a route: {@code access.admin}, or {@code access.metrics}. */
    public enum Audience { ADMIN, METRICS }

    /** An answer to a routed request; {@code mayPull} says which repositories the caller may see. */
    @FunctionalInterface
    public interface Answer {
        Future<Void> answer(RoutingContext ctx, Predicate<String> mayPull);
    }

    /** Makes the handler of a route: admits the caller as {@code audience} says, then answers; counted as {@code label}. */
    @FunctionalInterface
    public interface Guard {
        Handler<RoutingContext> guard(String label, Audience audience, Answer answer);
    }

    private OperatorRoutes() {
    }

    /** Adds the admin API's and the status page's routes to {@code router}. */
    public static void mount(Router router, Guard guard, AdminApi admin, StatusPage status) {
        Answer notAllowedPrefetch = admin(admin, ctx -> AdminApi.methodNotAllowed(ctx.request(), "GET, POST"));
        router.post("/admin/prefetch").handler(guard.guard("admin", Audience.ADMIN,
                admin(admin, ctx -> admin.prefetch(ctx.request()))));
        router.get("/admin/prefetch").handler(guard.guard("admin", Audience.ADMIN,
                admin(admin, ctx -> admin.jobs(ctx.request()))));
        router.route("/admin/prefetch").handler(guard.guard("admin", Audience.ADMIN, notAllowedPrefetch));
        router.get("/admin/prefetch/:id").handler(guard.guard("admin", Audience.ADMIN,
                admin(admin, ctx -> admin.job(ctx.request(), ctx.pathParam("id")))));
        router.route("/admin/prefetch/:id").handler(guard.guard("admin", Audience.ADMIN,
                admin(admin, ctx -> AdminApi.methodNotAllowed(ctx.request(), "GET"))));
        router.get("/admin/repositories").handler(guard.guard("admin", Audience.ADMIN,
                admin(admin, ctx -> admin.repositories(ctx.request()))));
        router.route("/admin/repositories").handler(guard.guard("admin", Audience.ADMIN,
                admin(admin, ctx -> AdminApi.methodNotAllowed(ctx.request(), "GET"))));
        router.get("/admin/repositories/*").handler(guard.guard("admin", Audience.ADMIN,
                admin(admin, ctx -> admin.repository(ctx.request(), rest(ctx, "/admin/repositories/")))));
        router.delete("/admin/repositories/*").handler(guard.guard("admin", Audience.ADMIN,
                admin(admin, ctx -> admin.removeRepository(ctx.request(), rest(ctx, "/admin/repositories/")))));
        router.route("/admin/repositories/*").handler(guard.guard("admin", Audience.ADMIN,
                admin(admin, ctx -> AdminApi.methodNotAllowed(ctx.request(), "GET, DELETE"))));
        router.delete("/admin/digests/:digest").handler(guard.guard("admin", Audience.ADMIN,
                admin(admin, ctx -> admin.digest(ctx.request(), ctx.pathParam("digest")))));
        router.route("/admin/digests/:digest").handler(guard.guard("admin", Audience.ADMIN,
                admin(admin, ctx -> AdminApi.methodNotAllowed(ctx.request(), "DELETE"))));
        router.get("/admin/hosted").handler(guard.guard("admin", Audience.ADMIN,
                admin(admin, ctx -> admin.hosted(ctx.request()))));
        router.route("/admin/hosted").handler(guard.guard("admin", Audience.ADMIN,
                admin(admin, ctx -> AdminApi.methodNotAllowed(ctx.request(), "GET"))));
        router.post("/admin/hosted/gc").handler(guard.guard("admin", Audience.ADMIN,
                admin(admin, ctx -> admin.collectHosted(ctx.request()))));
        router.route("/admin/hosted/gc").handler(guard.guard("admin", Audience.ADMIN,
                admin(admin, ctx -> AdminApi.methodNotAllowed(ctx.request(), "POST"))));
        router.route("/admin").handler(guard.guard("admin", Audience.ADMIN,
                admin(admin, ctx -> AdminApi.unknownCall(ctx.request()))));
        router.route("/admin/*").handler(guard.guard("admin", Audience.ADMIN,
                admin(admin, ctx -> AdminApi.unknownCall(ctx.request()))));

        router.get("/status").handler(guard.guard("status", Audience.METRICS, (ctx, mayPull) -> status.page(ctx.request())));
        router.get(StatusPage.JSON_PATH).handler(guard.guard("status", Audience.METRICS,
                (ctx, mayPull) -> status.data(ctx.request(), mayPull)));
        router.get("/status/:asset").handler(guard.guard("status", Audience.METRICS,
                (ctx, mayPull) -> status.asset(ctx.request())));
        // Registry clients never ask for "/" with text/html; for them, "/" stays the registry's answer.
        Handler<RoutingContext> page = guard.guard("status", Audience.METRICS, (ctx, mayPull) -> status.page(ctx.request()));
        router.get("/").handler(ctx -> {
            if (StatusPage.wantsHtml(ctx.request().getHeader("Accept"))) {
                page.handle(ctx);
            } else {
                ctx.next();
            }
        });
    }

    /** An admin call: answered only for the admin token (see {@link AdminApi#authorized}). */
    private static Answer admin(AdminApi admin, java.util.function.Function<RoutingContext, Future<Void>> call) {
        return (ctx, mayPull) -> admin.authorized(ctx.request(), () -> call.apply(ctx));
    }

    /** The request's path after {@code prefix} (a repository name keeps its slashes). */
    private static String rest(RoutingContext ctx, String prefix) {
        String path = ctx.request().path();
        return path.length() > prefix.length() ? path.substring(prefix.length()) : "";
    }
}
