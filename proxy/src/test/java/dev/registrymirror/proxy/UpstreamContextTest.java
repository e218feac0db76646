package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.metrics.MirrorMetrics;
import dev.registrymirror.proxy.manifest.MediaTypes;
import dev.registrymirror.proxy.upstream.UpstreamClient;
import io.vertx.core.MultiMap;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpMethod;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/** Whatever thread an upstream answer arrives on, the caller continues on its own event loop. */
class UpstreamContextTest extends MirrorTestBase {

    @Test
    void aRequestThatWaitedForAnotherLoopsTokenFetchContinuesOnItsOwnLoop() throws Exception {
        hub.putImage("library/first", "1", randomBytes(100, 3));
        hub.putImage("library/alpine", "a", randomBytes(100, 1));
        hub.putImage("library/alpine", "b", randomBytes(100, 2));
        UpstreamClient client = new UpstreamClient(vertx, config().defaultUpstream(), MirrorMetrics.create(), clock,
                new dev.registrymirror.proxy.upstream.BodyMemory(vertx, 8L << 20), "registry-mirror/test");
        // A first request teaches the client the upstream's challenge: from then on, the token for a new
        // repository is fetched before its first request, and concurrent requests share that fetch.
        MultiMap accept = MultiMap.caseInsensitiveMultiMap().add(HttpHeaders.ACCEPT, MediaTypes.OCI_MANIFEST);
        CompletableFuture<Integer> learned = new CompletableFuture<>();
        vertx.runOnContext(v -> client.send(HttpMethod.GET, "/v2/library/first/manifests/1", "library/first", accept,
                "manifest").onComplete(ar -> {
                    UpstreamClient.discard(ar.result());
                    learned.complete(ar.result().statusCode());
                }));
        assertThat(learned.get(10, TimeUnit.SECONDS)).isEqualTo(200);
        hub.tokenDelayMillis = 300; // both requests below wait for the one token fetch
        // Two verticle instances: two contexts, each on an event loop of its own.
        java.util.List<io.vertx.core.Context> contexts = new java.util.concurrent.CopyOnWriteArrayList<>();
        java.util.List<String> loops = new java.util.concurrent.CopyOnWriteArrayList<>();
        await(vertx.deployVerticle(() -> new io.vertx.core.AbstractVerticle() {
            @Override
            public void start() {
                contexts.add(context);
                loops.add(Thread.currentThread().getName());
            }
        }, new io.vertx.core.DeploymentOptions().setInstances(2)));
        io.vertx.core.Context a = contexts.get(0);
        io.vertx.core.Context b = contexts.get(1);
        assertThat(loops.get(0)).isNotEqualTo(loops.get(1));
        CompletableFuture<String> onA = new CompletableFuture<>();
        CompletableFuture<String> onB = new CompletableFuture<>();
        for (var pair : java.util.List.of(java.util.Map.entry(a, onA), java.util.Map.entry(b, onB))) {
            io.vertx.core.Context ctx = pair.getKey();
            String tag = ctx == a ? "a" : "b";
            ctx.runOnContext(v -> {
                String own = Thread.currentThread().getName();
                MultiMap headers = MultiMap.caseInsensitiveMultiMap().add(HttpHeaders.ACCEPT, MediaTypes.OCI_MANIFEST);
                client.send(HttpMethod.GET, "/v2/library/alpine/manifests/" + tag, "library/alpine", headers, "manifest")
                        .onComplete(ar -> {
                            if (ar.succeeded()) {
                                UpstreamClient.discard(ar.result());
                            }
                            String here = Thread.currentThread().getName();
                            pair.getValue().complete(ar.succeeded() && here.equals(own) ? "own loop"
                                    : ar.succeeded() ? "continued on " + here + " instead of " + own : ar.cause().toString());
                        });
            });
        }
        // Before, the request that joined the other's token fetch went on on the other's event loop (and
        // so did a download it started: its writer on one loop, its file writes on another).
        assertThat(onA.get(10, TimeUnit.SECONDS)).isEqualTo("own loop");
        assertThat(onB.get(10, TimeUnit.SECONDS)).isEqualTo("own loop");
        assertThat(hub.count("auth")).isEqualTo(2); // one for library/first, one shared for library/alpine
        client.close();
    }
}
