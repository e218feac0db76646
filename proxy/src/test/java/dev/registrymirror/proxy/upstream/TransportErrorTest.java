package dev.registrymirror.proxy.upstream;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.NotEnoughSpaceException;
import io.netty.channel.ConnectTimeoutException;
import io.netty.handler.timeout.ReadTimeoutException;
import io.vertx.core.VertxException;
import java.io.IOException;
import java.net.ConnectException;
import java.net.SocketTimeoutException;
import java.net.UnknownHostException;
import java.util.concurrent.TimeoutException;
import javax.net.ssl.SSLHandshakeException;
import org.junit.jupiter.api.Test;

/** Failures are classified by their types, never by names or message texts. */
class TransportErrorTest {

    private static String reason(Throwable t) {
        return UpstreamClient.transportError("hub", "h", t).upstreamReason;
    }

    @Test
    void byTypeAndCause() {
        assertThat(reason(new ConnectException("refused"))).isEqualTo("connect");
        assertThat(reason(new ConnectTimeoutException("connect timed out"))).isEqualTo("connect");
        assertThat(reason(new UnknownHostException("nope.invalid"))).isEqualTo("connect");
        assertThat(reason(new TimeoutException("idle"))).isEqualTo("timeout");
        assertThat(reason(ReadTimeoutException.INSTANCE)).isEqualTo("timeout");
        assertThat(reason(new SocketTimeoutException())).isEqualTo("timeout");
        assertThat(reason(new SSLHandshakeException("bad certificate"))).isEqualTo("tls");
        assertThat(reason(new IOException("Connection reset by peer"))).isEqualTo("reset");
        // Wrapped causes count: the old check looked at the outer class's name only.
        assertThat(reason(new VertxException("request failed", new TimeoutException("idle")))).isEqualTo("timeout");
        assertThat(reason(new VertxException("request failed", new ConnectException("refused")))).isEqualTo("connect");
        // A name is not a type: this is not a timeout, whatever it is called.
        assertThat(reason(new TimeoutSettingsRejected())).isEqualTo("reset");
    }

    @Test
    void outOfSpaceIsTheTypeOrTheSystemsOwnError() {
        assertThat(NotEnoughSpaceException.isOutOfSpace(new NotEnoughSpaceException(10, 100))).isTrue();
        assertThat(NotEnoughSpaceException.isOutOfSpace(new VertxException("write failed",
                new IOException("No space left on device")))).isTrue();
        assertThat(NotEnoughSpaceException.isOutOfSpace(new IOException("Disk quota exceeded"))).isTrue();
        // The mirror's own message text used to be matched too; now only the type says so.
        assertThat(NotEnoughSpaceException.isOutOfSpace(new IOException("only 5 bytes free for a blob of 9"))).isFalse();
        assertThat(NotEnoughSpaceException.isOutOfSpace(new IOException("Input/output error"))).isFalse();
    }

    private static final class TimeoutSettingsRejected extends RuntimeException {
        private static final long serialVersionUID = 1L;
    }
}
