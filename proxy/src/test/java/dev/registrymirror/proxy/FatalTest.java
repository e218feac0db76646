package dev.registrymirror.proxy;

import dev.registrymirror.cache.ForwardingBlobStore;
import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import dev.registrymirror.proxy.vertx.Fatal;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/** An Error on any thread ends the process, so that a supervisor starts a working one. */
class FatalTest extends MirrorTestBase {

    @Test
    void anErrorInBlockingWorkIsFatal() throws Exception {
        Digest d = hub.putBlob(randomBytes(1000, 1));
        mirror = await(Mirror.start(vertx, config(), clock, real -> new ForwardingBlobStore(real) {
            @Override
            public boolean mayHold(Digest digest) {
                return true; // looked up (on a worker) even when the index knows it is not stored
            }

            @Override
            public Optional<Blob> acquire(Digest digest) {
                throw new StackOverflowError("thrown by the test");
            }
        }));
        get("/v2/library/alpine/blobs/" + d);
        // Before, the Error only failed the request's future: a 500, and the mirror went on half-alive.
        assertThat(fatal.poll(10, TimeUnit.SECONDS)).isEqualTo("blocking work: java.lang.StackOverflowError: thrown by the test");
        // The request it failed reports it again (in production the first report has ended the process).
        assertThat(fatal.poll(10, TimeUnit.SECONDS)).isEqualTo("a blob request: java.lang.StackOverflowError: thrown by the test");
    }

    @Test
    void anErrorOnAnEventLoopIsFatal() throws Exception {
        Digest d = hub.putBlob(randomBytes(1000, 2));
        mirror = await(Mirror.start(vertx, config(), clock, real -> new ForwardingBlobStore(real) {
            @Override
            public boolean knownPresent(Digest digest) {
                throw new NoClassDefFoundError("thrown by the test"); // on the event loop, as a miss is handled
            }
        }));
        try {
            get("/v2/library/alpine/blobs/" + d);
        } catch (RuntimeException e) {
            // no answer: the request's handler died with the Error
        }
        assertThat(fatal.poll(10, TimeUnit.SECONDS)).isEqualTo("a blob request: java.lang.NoClassDefFoundError: thrown by the test");
        // One thrown by an event-loop callback outside any request reaches the handler the mirror installs.
        vertx.setTimer(1, id -> {
            throw new NoClassDefFoundError("thrown by a timer");
        });
        assertThat(fatal.poll(10, TimeUnit.SECONDS)).isEqualTo("an event loop: java.lang.NoClassDefFoundError: thrown by a timer");
    }

    @Test
    void theProcessEndsWithExitCode70AndALogLine() throws Exception {
        Path java = Path.of(System.getProperty("java.home"), "bin", "java");
        Process p = new ProcessBuilder(java.toString(), "-cp", System.getProperty("java.class.path"),
                FatalProbe.class.getName()).redirectErrorStream(true).start();
        assertThat(p.waitFor(60, TimeUnit.SECONDS)).as("the probe ended").isTrue();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.exitValue()).as(out).isEqualTo(Fatal.EXIT_CODE);
        assertThat(out).contains("ERROR Fatal - fatal error in thread probe; the process ends (exit code 70)")
                .contains("java.lang.OutOfMemoryError: thrown by the probe");
    }

    /** A JVM that installs the mirror's handlers as Main does, then lets an Error escape a thread. */
    public static final class FatalProbe {
        public static void main(String[] args) throws InterruptedException {
            Fatal.install();
            Thread t = new Thread(() -> {
                throw new OutOfMemoryError("thrown by the probe");
            }, "probe");
            t.start();
            t.join();
            Thread.currentThread().join(); // the handler must end the process; nothing else would
        }
    }
}
