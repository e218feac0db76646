package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ch.qos.logback.classic.spi.ILoggingEvent;
import dev.registrymirror.cache.Digest;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.cert.X509Certificate;
import java.time.Duration;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLParameters;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code server.tls}: HTTPS with TLS 1.2 and 1.3, certificates renewed without a restart, client certificates. */
class TlsTest extends MirrorTestBase {
    @TempDir
    Path pki;
    TestPki ca;
    Path cert;
    Path key;
    Path clientCa;
    boolean mutual;
    String prefetch = "";

    @BeforeEach
    void certificates() throws Exception {
        ca = new TestPki("Test CA");
        Path[] files = ca.server("mirror-1").write(pki, "tls");
        cert = files[0];
        key = files[1];
        clientCa = ca.writeCa(pki.resolve("clients-ca.crt"));
    }

    @Override
    String serverYaml() {
        return ", tls: {certFile: '" + cert + "', keyFile: '" + key + "'"
                + (mutual ? ", clientCaFile: '" + clientCa + "'" : "") + "}";
    }

    String access = "";

    @Override
    String topLevelYaml() {
        return (prefetch.isEmpty() ? "" : "\nprefetch:\n" + prefetch) + access;
    }

    private HttpResponse<byte[]> https(SSLContext ctx, String path, String... protocols) throws Exception {
        HttpClient.Builder b = HttpClient.newBuilder().sslContext(ctx).connectTimeout(Duration.ofSeconds(5));
        if (protocols.length > 0) {
            b.sslParameters(new SSLParameters(null, protocols));
        }
        return b.build().send(HttpRequest.newBuilder(URI.create("https://localhost:" + mirror.port() + path))
                .timeout(Duration.ofSeconds(10)).build(), HttpResponse.BodyHandlers.ofByteArray());
    }

    private static String servedCn(HttpResponse<?> r) throws Exception {
        X509Certificate c = (X509Certificate) r.sslSession().orElseThrow().getPeerCertificates()[0];
        return c.getSubjectX500Principal().getName();
    }

    @Test
    void servesHttpsWithTls12And13Only() throws Exception {
        startMirror();
        HttpResponse<byte[]> r = https(ca.trustingContext(), "/v2/");
        assertThat(r.statusCode()).isEqualTo(200);
        assertThat(r.sslSession().orElseThrow().getProtocol()).isEqualTo("TLSv1.3");
        assertThat(https(ca.trustingContext(), "/v2/", "TLSv1.2").sslSession().orElseThrow().getProtocol())
                .isEqualTo("TLSv1.2");
        assertThatThrownBy(() -> https(ca.trustingContext(), "/v2/", "TLSv1.1")).isInstanceOf(IOException.class);
        assertThatThrownBy(() -> get("/v2/")).as("plain HTTP on the TLS port").isInstanceOf(RuntimeException.class);
    }

    @Test
    void aRenewedCertificateIsServedWithoutARestartAndABrokenOneIsNot() throws Exception {
        startMirror();
        assertThat(servedCn(https(ca.trustingContext(), "/v2/"))).isEqualTo("CN=mirror-1");
        assertThat(await(mirror.reloadTls())).as("nothing changed").isFalse();

        // Renewed as cert-manager does it: new files moved into place.
        Path[] renewed = ca.server("mirror-2").write(pki, "renewed");
        Files.move(renewed[0], cert, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        Files.move(renewed[1], key, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        assertThat(await(mirror.reloadTls())).isTrue();
        assertThat(servedCn(https(ca.trustingContext(), "/v2/"))).isEqualTo("CN=mirror-2");

        // A certificate whose key does not match: kept out, logged once.
        Path[] other = ca.server("mirror-3").write(pki, "other");
        Files.copy(other[0], cert, StandardCopyOption.REPLACE_EXISTING); // its key stays mirror-2's
        assertThat(await(mirror.reloadTls())).isFalse();
        assertThat(await(mirror.reloadTls())).as("not tried again until the files change again").isFalse();
        assertThat(servedCn(https(ca.trustingContext(), "/v2/"))).isEqualTo("CN=mirror-2");
        assertThat(logged.list).extracting(ILoggingEvent::getFormattedMessage)
                .filteredOn(m -> m.startsWith("TLS files changed but cannot be used")).hasSize(1)
                .allMatch(m -> m.contains("still serving CN=mirror-2"));
    }

    @Test
    void withAClientCaEveryClientMustPresentACertificateItSigned() throws Exception {
        mutual = true;
        startMirror();
        assertThatThrownBy(() -> https(ca.trustingContext(), "/v2/")).as("no client certificate")
                .isInstanceOf(IOException.class);
        TestPki other = new TestPki("Other CA");
        assertThatThrownBy(() -> https(other.client("mallory").clientContext(ca), "/v2/"))
                .as("a certificate of another CA").isInstanceOf(IOException.class);
        assertThat(https(ca.client("node-1").clientContext(ca), "/v2/").statusCode()).isEqualTo(200);
    }

    @Test
    void aRenewedCertificateStillRequiresClientCertificates() throws Exception {
        // Renewals replace the server's TLS options: they must carry the client CA and the requirement too.
        mutual = true;
        startMirror();
        Path[] renewed = ca.server("mirror-2").write(pki, "renewed");
        Files.move(renewed[0], cert, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        Files.move(renewed[1], key, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        assertThat(await(mirror.reloadTls())).isTrue();
        HttpResponse<byte[]> served = https(ca.client("node-1").clientContext(ca), "/v2/");
        assertThat(servedCn(served)).isEqualTo("CN=mirror-2");
        assertThat(served.statusCode()).isEqualTo(200);
        assertThatThrownBy(() -> https(ca.trustingContext(), "/v2/")).as("no client certificate, after the renewal")
                .isInstanceOf(IOException.class);
        TestPki other = new TestPki("Other CA");
        assertThatThrownBy(() -> https(other.client("mallory").clientContext(ca), "/v2/"))
                .as("a certificate of another CA, after the renewal").isInstanceOf(IOException.class);
    }

    @Test
    void prefetchWorksBehindMutualTlsThroughTheLoopbackListenerWhichAsksForItsSecret() throws Exception {
        mutual = true;
        byte[] layer = randomBytes(50_000, 51);
        hub.putImage("library/alpine", "3.19", layer);
        prefetch = "  - {image: docker.io/alpine:3.19}\n";
        startMirror();
        long deadline = System.nanoTime() + 20_000_000_000L;
        while (Exposition.value(mirror.metrics().scrape(), "registrymirror_prefetch_runs_total{result=\"ok\"}") < 1) {
            assertThat(System.nanoTime()).as("prefetched within 20 s").isLessThan(deadline);
            Thread.sleep(10); // polling the mirror's own work, not waiting for time to pass
        }
        assertThat(hub.count("cdn", "GET", "/blobs/" + Digest.of("sha256", layer))).isEqualTo(1);

        // The loopback listener answers nobody who lacks the mirror's secret.
        HttpResponse<byte[]> r = send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + mirror.internalPort()
                + "/v2/library/alpine/manifests/3.19")).GET(), "X-Registry-Mirror-Internal", "guess");
        assertThat(r.statusCode()).isEqualTo(403);
        assertThat(send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + mirror.internalPort() + "/v2/")).GET())
                .statusCode()).isEqualTo(403);
    }

    @Test
    void aKeyThatIsNotTheCertificatesStopsTheStartNamingTheKey() throws Exception {
        key = ca.server("someone-else").write(pki, "else")[1];
        assertThatThrownBy(this::startMirror).hasMessageContaining("server.tls.keyFile: \"" + key + "\" cannot serve")
                .hasMessageContaining("the key is not the certificate's");
    }

    @Test
    void aClientCertificateCountsAsItsNamesInTheAccessRules() throws Exception {
        mutual = true;
        access = """

                access:
                  rules:
                    - repositories: ["docker.io/private/**"]
                      pull: [node-1]
                    - repositories: ["**"]
                      pull: [anonymous]
                """;
        byte[] layer = randomBytes(10_000, 52);
        hub.putImage("private/app", "1", layer);
        startMirror();
        SSLContext node1 = ca.client("node-1").clientContext(ca);
        SSLContext node2 = ca.client("node-2").clientContext(ca);
        assertThat(https(node1, "/v2/private/app/blobs/" + Digest.of("sha256", layer)).statusCode()).isEqualTo(200);
        HttpResponse<byte[]> denied = https(node2, "/v2/private/app/blobs/" + Digest.of("sha256", layer));
        assertThat(denied.statusCode()).isEqualTo(403);
        assertThat(new String(denied.body(), java.nio.charset.StandardCharsets.UTF_8)).contains("node-2 may not pull");
        assertThat(https(node2, "/v2/").statusCode()).as("no users: no challenge").isEqualTo(200);
    }

    @Test
    void theAdminApiCanBeKeptToSomeClientCertificates() throws Exception {
        mutual = true;
        access = """

                admin: {token: admin-token-0123456789abcdef}
                access:
                  admin: [ops-laptop]
                """;
        startMirror();
        HttpClient ops = HttpClient.newBuilder().sslContext(ca.client("ops-laptop").clientContext(ca)).build();
        HttpClient node = HttpClient.newBuilder().sslContext(ca.client("node-1").clientContext(ca)).build();
        HttpRequest list = HttpRequest.newBuilder(URI.create("https://localhost:" + mirror.port() + "/admin/repositories"))
                .header("Authorization", "Bearer admin-token-0123456789abcdef").build();
        assertThat(ops.send(list, HttpResponse.BodyHandlers.ofString()).statusCode()).isEqualTo(200);
        HttpResponse<String> refused = node.send(list, HttpResponse.BodyHandlers.ofString());
        assertThat(refused.statusCode()).isEqualTo(403);
        assertThat(refused.body()).contains("node-1 may not read /admin/repositories");
    }
}
