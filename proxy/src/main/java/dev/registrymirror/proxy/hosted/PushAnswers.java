package dev.registrymirror.proxy.hosted;

import dev.registrymirror.cache.HostedStore;
import dev.registrymirror.proxy.route.RegistryError;
import io.vertx.core.Future;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpServerRequest;

/** What uploads and manifest pushes answer alike: refusals of a body, the quota's error, {@code 100 Continue}. */
final class PushAnswers {
    private PushAnswers() {
    }

    /**
     * Over the quota: 403 DENIED, as Harbor and Distribution answer a refused push, so that Docker
     * prints the message instead of retrying.
     */
    static RegistryError quotaError(HostedStore.QuotaExceeded q) {
        return new RegistryError(403, "DENIED", "push refused: " + q.getMessage());
    }

    /**
     * Tells a client that sent {@code Expect: 100-continue} (curl does, for bodies over 1 MiB) to send
     * its body, now that it is wanted; without it, such a client waits a second before sending. A
     * request refused before this point never has its body sent.
     */
    static void continueIfExpected(HttpServerRequest req) {
        String expect = req.getHeader(HttpHeaders.EXPECT);
        if (expect != null && expect.equalsIgnoreCase("100-continue") && !req.response().headWritten()) {
            req.response().writeContinue();
        }
    }

    /** Fails with {@code e}, the connection closed after the answer if the body was not read. */
    static Future<Void> drainThen(HttpServerRequest req, RegistryError e) {
        if (!req.isEnded()) {
            req.response().putHeader(HttpHeaders.CONNECTION, "close");
        }
        return Future.failedFuture(e);
    }
}
