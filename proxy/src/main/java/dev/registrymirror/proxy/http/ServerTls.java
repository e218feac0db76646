package dev.registrymirror.proxy.http;

import dev.registrymirror.config.ConfigException;
import dev.registrymirror.config.MirrorConfig;
import io.vertx.core.Future;
import io.vertx.core.Vertx;
import io.vertx.core.http.ClientAuth;
import io.vertx.core.http.HttpServer;
import io.vertx.core.http.HttpServerOptions;
import io.vertx.core.net.PemKeyCertOptions;
import io.vertx.core.net.PemTrustOptions;
import io.vertx.core.net.ServerSSLOptions;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.cert.CertificateException;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CopyOnWriteArrayList;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The server side of {@code server.tls}: TLS 1.2 and 1.3 with the PEM certificate (and chain) and
 * key, client certificates required when a client CA is set, and the files read again when their
 * contents change (cert-manager and ACME clients replace them in place or swap a symlink), without
 * a restart. A renewal that cannot be used (a key that does not match, a broken file) is logged and
 * the certificate in use stays.
 */
public final class ServerTls {
    private static final Logger LOG = LoggerFactory.getLogger(ServerTls.class);
    static final Set<String> PROTOCOLS = Set.of("TLSv1.2", "TLSv1.3");
    /** How often the files are compared with what is in use. */
    public static final long CHECK_MILLIS = 10_000;

    private final MirrorConfig.Tls tls;
    private final List<HttpServer> servers = new CopyOnWriteArrayList<>();
    private volatile byte[] loaded;
    private volatile X509Certificate certificate;

    /** Reads the files (blocks); a certificate file without a PEM certificate is a ConfigException. */
    public ServerTls(Vertx vertx, MirrorConfig.Tls tls) {
        this.tls = tls;
        try {
            loaded = fingerprint();
            certificate = leaf(Files.readAllBytes(tls.certFile()));
        } catch (IOException e) {
            throw new ConfigException("server.tls: cannot read " + e.getMessage());
        } catch (CertificateException e) {
            throw new ConfigException("server.tls.certFile: \"" + tls.certFile() + "\" holds no PEM certificate: "
                    + e.getMessage());
        }
        try {
            checkKeyMatches(vertx);
        } catch (Exception e) {
            throw new ConfigException("server.tls.keyFile: \"" + tls.keyFile() + "\" cannot serve \"" + tls.certFile()
                    + "\": " + e.getMessage());
        }
    }

    /**
     * Fails unless the key file holds the private key of the certificate file's first certificate:
     * Vert.x and the JDK only find out at the first handshake, and a renewal that swapped one file
     * but not yet the other must not be served. Checked by signing with the key and verifying with
     * the certificate.
     */
    private void checkKeyMatches(Vertx vertx) throws Exception {
        javax.net.ssl.X509KeyManager km = null;
        for (javax.net.ssl.KeyManager m : keyCert().getKeyManagerFactory(vertx).getKeyManagers()) {
            if (m instanceof javax.net.ssl.X509KeyManager x) {
                km = x;
            }
        }
        if (km == null) {
            throw new CertificateException("no key in it");
        }
        for (String type : new String[]{"RSA", "EC", "EdDSA"}) {
            String[] aliases = km.getServerAliases(type, null);
            if (aliases == null) {
                continue;
            }
            for (String alias : aliases) {
                java.security.PrivateKey key = km.getPrivateKey(alias);
                X509Certificate[] chain = km.getCertificateChain(alias);
                String algorithm = switch (key.getAlgorithm()) {
                    case "RSA" -> "SHA256withRSA";
                    case "EC" -> "SHA256withECDSA";
                    default -> key.getAlgorithm();
                };
                byte[] probe = new byte[32];
                new java.security.SecureRandom().nextBytes(probe);
                java.security.Signature signer = java.security.Signature.getInstance(algorithm);
                signer.initSign(key);
                signer.update(probe);
                byte[] signature = signer.sign();
                java.security.Signature verifier = java.security.Signature.getInstance(algorithm);
                verifier.initVerify(chain[0].getPublicKey());
                verifier.update(probe);
                if (!chain[0].getPublicKey().getAlgorithm().equals(key.getAlgorithm()) || !verifier.verify(signature)) {
                    throw new CertificateException("the key is not the certificate's");
                }
                return;
            }
        }
        throw new CertificateException("no RSA, EC or EdDSA key in it");
    }

    /** Sets up {@code options} for HTTPS with the files (Vert.x reads them as the server starts). */
    public HttpServerOptions apply(HttpServerOptions options) {
        options.setSsl(true).setKeyCertOptions(keyCert()).setEnabledSecureTransportProtocols(PROTOCOLS)
                .setUseAlpn(false); // HTTP/1.1 only, as over plain HTTP (see Mirror#listen)
        if (tls.clientCaFile() != null) {
            options.setTrustOptions(trust()).setClientAuth(ClientAuth.REQUIRED);
        }
        return options;
    }

    /** A server that serves with these files; reloads are applied to each. */
    public void serving(HttpServer server) {
        servers.add(server);
    }

    /** The certificate in use (the first of the certificate file). */
    public X509Certificate certificate() {
        return certificate;
    }

    /**
     * Reads the files again (on a worker: they are files) and, if their contents changed, serves the
     * new certificate on every server for the connections opened from now on. Yields whether it did.
     */
    public Future<Boolean> reloadIfChanged(Vertx vertx) {
        return vertx.executeBlocking(() -> {
            byte[] now = fingerprint();
            if (Arrays.equals(now, loaded)) {
                return null;
            }
            X509Certificate leaf = leaf(Files.readAllBytes(tls.certFile()));
            checkKeyMatches(vertx);
            return new Object[]{now, leaf};
        }, false).compose(changed -> {
            if (changed == null) {
                return Future.succeededFuture(false);
            }
            byte[] print = (byte[]) changed[0];
            X509Certificate leaf = (X509Certificate) changed[1];
            // Everything the listener was started with, the client-certificate requirement included:
            // ServerSSLOptions default to no client authentication.
            ServerSSLOptions ssl = new ServerSSLOptions().setKeyCertOptions(keyCert())
                    .setEnabledSecureTransportProtocols(PROTOCOLS).setUseAlpn(false);
            if (tls.clientCaFile() != null) {
                ssl.setTrustOptions(trust()).setClientAuth(ClientAuth.REQUIRED);
            }
            List<Future<Boolean>> updates = new ArrayList<>();
            for (HttpServer s : servers) {
                updates.add(s.updateSSLOptions(ssl, true));
            }
            return Future.all(updates).map(v -> {
                loaded = print;
                certificate = leaf;
                LOG.info("TLS files changed: now serving {}", describe(leaf));
                return true;
            });
        }).recover(err -> {
            LOG.warn("TLS files changed but cannot be used ({}); still serving {}", err.getMessage(),
                    describe(certificate));
            try {
                loaded = fingerprint(); // logged once per change, not every check
            } catch (IOException e) {
                // looked at again at the next check
            }
            return Future.succeededFuture(false);
        });
    }

    /** {@code CN=mirror.lan, valid until 2027-03-01T00:00:00Z} for the log. */
    public static String describe(X509Certificate c) {
        return c == null ? "?" : c.getSubjectX500Principal().getName() + ", valid until " + c.getNotAfter().toInstant();
    }

    private PemKeyCertOptions keyCert() {
        return new PemKeyCertOptions().setCertPath(tls.certFile().toString()).setKeyPath(tls.keyFile().toString());
    }

    private PemTrustOptions trust() {
        return new PemTrustOptions().addCertPath(tls.clientCaFile().toString());
    }

    /** SHA-256 over the three files' contents. */
    private byte[] fingerprint() throws IOException {
        try {
            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            for (Path p : new Path[]{tls.certFile(), tls.keyFile(), tls.clientCaFile()}) {
                if (p != null) {
                    sha.update(Files.readAllBytes(p));
                    sha.update((byte) 0);
                }
            }
            return sha.digest();
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    private static X509Certificate leaf(byte[] pem) throws CertificateException {
        Collection<? extends java.security.cert.Certificate> all =
                CertificateFactory.getInstance("X.509").generateCertificates(new ByteArrayInputStream(pem));
        if (all.isEmpty()) {
            throw new CertificateException("no certificate in it");
        }
        return (X509Certificate) all.iterator().next();
    }
}
