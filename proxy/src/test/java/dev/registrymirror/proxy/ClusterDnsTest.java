package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.config.ConfigLoader;
import io.netty.bootstrap.Bootstrap;
import io.netty.buffer.Unpooled;
import io.netty.channel.Channel;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.SimpleChannelInboundHandler;
import io.netty.channel.nio.NioIoHandler;
import io.netty.channel.socket.nio.NioDatagramChannel;
import io.netty.handler.codec.dns.DatagramDnsQuery;
import io.netty.handler.codec.dns.DatagramDnsQueryDecoder;
import io.netty.handler.codec.dns.DatagramDnsResponse;
import io.netty.handler.codec.dns.DatagramDnsResponseEncoder;
import io.netty.handler.codec.dns.DefaultDnsRawRecord;
import io.netty.handler.codec.dns.DnsQuestion;
import io.netty.handler.codec.dns.DnsRecordType;
import io.netty.handler.codec.dns.DnsResponseCode;
import io.netty.handler.codec.dns.DnsSection;
import java.net.DatagramSocket;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * Discovery by DNS, as in Kubernetes behind a headless Service: three replicas whose membership
 * addresses are 127.0.0.1, 127.0.0.2 and 127.0.0.3 on one port (loopback answers the whole
 * 127.0.0.0/8), and a DNS server (Netty's DNS codec, on loopback) whose A records for the service
 * name are those three addresses. Each replica is given the name only, and they form one cluster.
 */
class ClusterDnsTest extends MirrorTestBase {
    static final String NAME = "registry-mirror-members.mirrors.svc.cluster.local";
    static final String SECRET = "the-cluster-secret-of-these-replicas-0123";

    EventLoopGroup dnsLoop;
    final AtomicInteger queries = new AtomicInteger();
    final List<Mirror> replicas = new ArrayList<>();

    @AfterEach
    void stopAll2() throws Exception {
        for (Mirror m : replicas) {
            await(m.stop());
        }
        if (dnsLoop != null) {
            dnsLoop.shutdownGracefully(0, 1, TimeUnit.SECONDS).sync();
        }
    }

    /** A DNS server answering A queries for {@link #NAME} with 127.0.0.1-3, and NXDOMAIN otherwise. */
    int startDns() throws Exception {
        int port;
        try (DatagramSocket probe = new DatagramSocket(0, java.net.InetAddress.getLoopbackAddress())) {
            port = probe.getLocalPort();
        }
        dnsLoop = new MultiThreadIoEventLoopGroup(1, NioIoHandler.newFactory());
        Channel ch = new Bootstrap().group(dnsLoop).channel(NioDatagramChannel.class)
                .handler(new io.netty.channel.ChannelInitializer<NioDatagramChannel>() {
                    @Override
                    protected void initChannel(NioDatagramChannel c) {
                        c.pipeline().addLast(new DatagramDnsQueryDecoder(), new DatagramDnsResponseEncoder(),
                                new SimpleChannelInboundHandler<DatagramDnsQuery>() {
                                    @Override
                                    protected void channelRead0(ChannelHandlerContext ctx, DatagramDnsQuery q) {
                                        queries.incrementAndGet();
                                        DnsQuestion question = q.recordAt(DnsSection.QUESTION);
                                        DatagramDnsResponse r = new DatagramDnsResponse(q.recipient(), q.sender(), q.id());
                                        r.addRecord(DnsSection.QUESTION, question);
                                        String asked = question.name().endsWith(".")
                                                ? question.name().substring(0, question.name().length() - 1)
                                                : question.name();
                                        if (asked.equals(NAME) && question.type() == DnsRecordType.A) {
                                            for (int i = 1; i <= 3; i++) {
                                                r.addRecord(DnsSection.ANSWER, new DefaultDnsRawRecord(question.name(),
                                                        DnsRecordType.A, 5, Unpooled.wrappedBuffer(new byte[] {127, 0, 0,
                                                        (byte) i})));
                                            }
                                        } else {
                                            r.setCode(DnsResponseCode.NXDOMAIN);
                                        }
                                        ctx.writeAndFlush(r);
                                    }
                                });
                    }
                }).bind(new InetSocketAddress("127.0.0.1", port)).sync().channel();
        assertThat(ch.isActive()).isTrue();
        return port;
    }

    @Test
    void replicasGivenADnsNameFindEachOther() throws Exception {
        int dnsPort = startDns();
        int memberPort = RealParts.freePort();
        List<Integer> ports = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            ports.add(RealParts.freePort());
        }
        for (int i = 0; i < 3; i++) {
            String yaml = """
                    server: {port: %d, host: 127.0.0.1, eventLoops: %d, shutdownTimeout: 2s}
                    storage: {path: '%s', minFree: 0}
                    %s
                    cluster:
                      name: dns
                      secret: '%s'
                      bind: 127.0.0.%d:%d
                      dns: %s
                      dnsServer: 127.0.0.1:%d
                      url: http://127.0.0.1:%d
                      failureDetection: 2s
                    """.formatted(ports.get(i), EVENT_LOOPS, storage.resolve("replica-" + i), upstreamsYaml(), SECRET,
                    i + 1, memberPort, NAME, dnsPort, ports.get(i));
            replicas.add(await(Mirror.start(vertx, ConfigLoader.parse(yaml, Map.of(), ConfigLoader.Overrides.none()),
                    clock)));
        }
        for (int i = 0; i < 3; i++) {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(40);
            while (members(ports.get(i)) != 3) {
                assertThat(System.nanoTime()).as("replica %d sees three members", i).isLessThan(deadline);
                Thread.sleep(50); // the membership forms on JGroups' threads
            }
        }
        assertThat(queries.get()).as("they asked the DNS server").isPositive();
    }

    double members(int port) throws Exception {
        String text = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + "/metrics")).build(),
                HttpResponse.BodyHandlers.ofString()).body();
        return Exposition.value(text, "registrymirror_cluster_members");
    }
}
