package dev.registrymirror.proxy.hosted;

import dev.registrymirror.cache.HostedStore;
import dev.registrymirror.proxy.route.RegistryError;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpServerRequest;

/**
 * What uploads and manifest pushes read and answer alike: the announced length, the quota's error,
 * {@code 100 Continue}. A refusal before the body is read needs nothing more: the registry handler
 * closes such a request's connection after the answer.
 */
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

    /** The request's announced {@code Content-Length}; -1 when it has none (or not a number). */
    static long announcedLength(HttpServerRequest req) {
        String length = req.getHeader(HttpHeaders.CONTENT_LENGTH);
        return length != null && length.matches("\\d{1,18}") ? Long.parseLong(length) : -1;
    }
}
