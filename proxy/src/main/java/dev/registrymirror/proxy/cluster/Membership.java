package dev.registrymirror.proxy.cluster;

import dev.registrymirror.config.MirrorConfig;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.function.Consumer;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import org.jgroups.Address;
import org.jgroups.JChannel;
import org.jgroups.Receiver;
import org.jgroups.View;
import org.jgroups.protocols.AUTH;
import org.jgroups.protocols.FD_ALL3;
import org.jgroups.protocols.FD_SOCK2;
import org.jgroups.protocols.FRAG4;
import org.jgroups.protocols.MERGE3;
import org.jgroups.protocols.SYM_ENCRYPT;
import org.jgroups.protocols.TCP;
import org.jgroups.protocols.TCPPING;
import org.jgroups.protocols.UNICAST3;
import org.jgroups.protocols.VERIFY_SUSPECT2;
import org.jgroups.protocols.dns.DNS_PING;
import org.jgroups.protocols.pbcast.GMS;
import org.jgroups.protocols.pbcast.NAKACK2;
import org.jgroups.protocols.pbcast.STABLE;
import org.jgroups.stack.Protocol;
import org.jgroups.util.NameCache;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The replicas of one cluster as this one sees them, from an embedded JGroups channel: no service to
 * run beside the mirror.
 *
 * <p>The protocol stack, bottom up: TCP on {@code cluster.bind}; discovery from the static
 * {@code cluster.members} ({@code TCPPING}) or a DNS name's A records ({@code DNS_PING}, a
 * Kubernetes headless service); {@code MERGE3} to heal partitions; failure detection by a closed
 * socket ({@code FD_SOCK2}) and by silence ({@code FD_ALL3}, timeout {@code cluster.failureDetection},
 * confirmed by {@code VERIFY_SUSPECT2}); {@code SYM_ENCRYPT} with an AES key derived from the
 * cluster's secret, so a host without it can neither read nor send anything the members accept;
 * reliable delivery; {@code AUTH} with an HMAC of the secret ({@link SecretToken}) checked by the
 * coordinator when a replica joins; and {@code GMS}, which agrees on the views.
 *
 * <p>Each replica's logical name is its registry URL ({@code cluster.url}), which discovery hands
 * to the others: a view is the list of URLs that own content ({@link Ring}).
 */
public final class Membership implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(Membership.class);

    private final JChannel channel;
    private final URI self;
    private volatile List<URI> members;
    private final List<Consumer<List<URI>>> listeners = new CopyOnWriteArrayList<>();

    private Membership(JChannel channel, URI self) {
        this.channel = channel;
        this.self = self;
        this.members = List.of(self);
    }

    /** Joins (or founds) the cluster. Blocks for up to a few seconds: call it off the event loops. */
    public static Membership join(MirrorConfig.Cluster config) throws Exception {
        InetAddress bind = InetAddress.getByName(config.bindHost());
        TCP tcp = new TCP();
        tcp.setBindAddress(bind);
        tcp.setBindPort(config.bindPort());
        tcp.setPortRange(0);
        Protocol discovery;
        if (config.dns() != null) {
            DNS_PING dns = new DNS_PING().setDNSQuery(config.dns()).dnsRecordType("A");
            if (config.dnsServer() != null) {
                dns.setDNSAddress(config.dnsServer());
            }
            discovery = dns;
        } else {
            List<InetSocketAddress> hosts = new ArrayList<>();
            for (String m : config.members()) {
                int colon = m.lastIndexOf(':');
                hosts.add(new InetSocketAddress(m.substring(0, colon), Integer.parseInt(m.substring(colon + 1))));
            }
            discovery = new TCPPING().setInitialHosts(hosts).setPortRange(0);
        }
        long timeout = config.failureDetection().toMillis();
        FD_ALL3 silence = new FD_ALL3();
        silence.setTimeout(timeout);
        silence.setInterval(Math.max(250, timeout / 4));
        VERIFY_SUSPECT2 verify = new VERIFY_SUSPECT2();
        verify.setValue("timeout", Math.max(500, timeout / 5));
        MERGE3 merge = new MERGE3();
        merge.setValue("min_interval", 1000L).setValue("max_interval", 3000L);
        SYM_ENCRYPT encrypt = new SYM_ENCRYPT();
        encrypt.setSecretKey(new SecretKeySpec(derive(config, "encryption"), "AES"));
        AUTH auth = new AUTH();
        auth.setAuthToken(new SecretToken(derive(config, "membership")));
        GMS gms = new GMS();
        // Three tries of 2 s, then a replica founds the cluster alone (MERGE3 joins it with the others once
        // they answer); a host without the secret is never answered and ends there too.
        gms.setValue("join_timeout", 2000L).setValue("max_join_attempts", 3).setValue("print_local_addr", false);
        JChannel channel = new JChannel(tcp, discovery, merge, new FD_SOCK2(), silence, verify, encrypt,
                new NAKACK2(), new UNICAST3(), new STABLE(), auth, gms, new FRAG4());
        Membership m = new Membership(channel, config.url());
        channel.name(config.url().toString());
        channel.setReceiver(new Receiver() {
            @Override
            public void viewAccepted(View view) {
                m.viewed(view);
            }
        });
        channel.connect(config.name());
        return m;
    }

    /** A 32-byte key for {@code use}, from the cluster's secret and name: never the secret itself. */
    static byte[] derive(MirrorConfig.Cluster config, String use) {
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(config.secret().getBytes(StandardCharsets.UTF_8), "HmacSHA256"));
            return mac.doFinal(("registry-mirror cluster " + config.name() + " " + use).getBytes(StandardCharsets.UTF_8));
        } catch (java.security.GeneralSecurityException e) {
            throw new IllegalStateException("every JVM has HmacSHA256", e);
        }
    }

    private void viewed(View view) {
        List<URI> now = new ArrayList<>();
        for (Address a : view.getMembers()) {
            String name = NameCache.get(a);
            try {
                now.add(name != null && name.contains("://") ? URI.create(name) : null);
            } catch (IllegalArgumentException e) {
                now.add(null);
            }
        }
        now.removeIf(u -> u == null);
        Collections.sort(now);
        List<URI> before = members;
        members = List.copyOf(now);
        if (!members.equals(before)) {
            LOG.info("cluster: {} members: {}", members.size(), members);
            for (Consumer<List<URI>> l : listeners) {
                l.accept(members);
            }
        }
    }

    /** The live members' registry URLs, sorted; this replica among them. */
    public List<URI> members() {
        return members;
    }

    /** This replica's registry URL. */
    public URI self() {
        return self;
    }

    /** Runs {@code listener} with the members after every change (on a JGroups thread: keep it short). */
    public void onChange(Consumer<List<URI>> listener) {
        listeners.add(listener);
    }

    /** Leaves the cluster (the others see it go at once). */
    @Override
    public void close() {
        channel.close();
    }
}
