package dev.registrymirror.proxy;

import io.vertx.core.Future;
import io.vertx.core.Vertx;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;

/** For tests of the jar as a child process against a {@link FakeHub} running in the test's JVM. */
abstract class FakeHubIT {
    Vertx vertx;
    FakeHub hub;

    @BeforeEach
    void startHub() throws Exception {
        vertx = Vertx.vertx();
        hub = await(FakeHub.deploy(vertx, false));
    }

    @AfterEach
    void stopHub() throws Exception {
        await(vertx.close());
    }

    static <T> T await(Future<T> f) throws Exception {
        return f.toCompletionStage().toCompletableFuture().get(60, TimeUnit.SECONDS);
    }
}
