package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import ch.qos.logback.classic.Level;
import ch.qos.logback.classic.spi.ILoggingEvent;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Bad input from a client gets a 4xx and at most one WARN line, never an ERROR or a stack trace. */
class BadInputTest extends MirrorTestBase {
    @TempDir
    Path dir;
    String access = "";

    @Override
    String topLevelYaml() {
        return "\n" + access;
    }

    /** Sends {@code request} as it is (clients refuse to send some of these) and yields the answer's head and body. */
    String raw(String request) throws IOException {
        try (Socket s = new Socket("127.0.0.1", mirror.port())) {
            s.setSoTimeout(10_000);
            OutputStream out = s.getOutputStream();
            out.write(request.getBytes(StandardCharsets.ISO_8859_1));
            out.flush();
            InputStream in = s.getInputStream();
            return new String(in.readAllBytes(), StandardCharsets.ISO_8859_1);
        }
    }

    private void assertQuietAboutIt(int badRequests) {
        assertThat(logged.list).filteredOn(e -> e.getLevel().isGreaterOrEqual(Level.ERROR))
                .extracting(ILoggingEvent::getFormattedMessage).isEmpty();
        assertThat(logged.list).filteredOn(e -> e.getThrowableProxy() != null)
                .extracting(ILoggingEvent::getFormattedMessage).as("stack traces").isEmpty();
        assertThat(logged.list).filteredOn(e -> e.getLevel() == Level.WARN).hasSizeLessThanOrEqualTo(badRequests);
    }

    @Test
    void aMalformedQueryIs400() throws IOException {
        startMirror();
        String answer = raw("GET /v2/library/alpine/tags/list?%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assertThat(answer).startsWith("HTTP/1.1 400");
        assertThat(answer).contains("\"code\":\"UNSUPPORTED\"").contains("malformed query");
        assertQuietAboutIt(1);
    }

    @Test
    void aHugeTokenFormIs413() throws IOException {
        Path users = Files.writeString(dir.resolve("htpasswd"), AccessTest.entry("alice", AccessTest.ALICE_PW));
        access = "access: {users: '" + users + "'}\n";
        startMirror();
        String form = "grant_type=password&username=alice&password=" + "x".repeat(100_000);
        String answer = raw("POST /token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                + "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " + form.length() + "\r\n\r\n" + form);
        assertThat(answer).startsWith("HTTP/1.1 413");
        assertThat(answer).contains("\"code\":\"SIZE_INVALID\"");
        String chunked = raw("POST /token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                + "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
                + Integer.toHexString(form.length()) + "\r\n" + form + "\r\n0\r\n\r\n");
        assertThat(chunked).as("without a length").matches("(?s)HTTP/1.1 (400|413).*");
        assertQuietAboutIt(2);
    }
}
