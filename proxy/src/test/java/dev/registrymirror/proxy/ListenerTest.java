package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/** The listening side: one port, shared by every event loop. */
class ListenerTest extends MirrorTestBase {

    @Test
    void portZeroIsOneFreePortSharedByEveryEventLoop() throws IOException {
        Set<Integer> before = listeningPortsOfThisProcess();
        startMirror();
        Set<Integer> opened = listeningPortsOfThisProcess();
        opened.removeAll(before);
        // Each of the EVENT_LOOPS servers used to get a random port of its own, only one of which was used.
        // Besides it: the loopback listener for the mirror's own (prefetch) requests, one port.
        assertThat(opened).containsExactlyInAnyOrder(mirror.port(), mirror.internalPort());
        assertThat(get("/v2/").statusCode()).isEqualTo(200);
    }

    /** The TCP ports this process listens on, from /proc (Linux). */
    static Set<Integer> listeningPortsOfThisProcess() throws IOException {
        Set<String> inodes = new HashSet<>();
        try (Stream<Path> fds = Files.list(Path.of("/proc/self/fd"))) {
            for (Path fd : (Iterable<Path>) fds::iterator) {
                try {
                    String target = Files.readSymbolicLink(fd).toString();
                    if (target.startsWith("socket:[")) {
                        inodes.add(target.substring(8, target.length() - 1));
                    }
                } catch (IOException e) {
                    // closed meanwhile
                }
            }
        }
        Set<Integer> ports = new HashSet<>();
        for (String table : List.of("/proc/self/net/tcp", "/proc/self/net/tcp6")) {
            Path file = Path.of(table);
            if (!Files.exists(file)) {
                continue;
            }
            for (String line : Files.readAllLines(file).subList(1, Files.readAllLines(file).size())) {
                String[] f = line.trim().split("\\s+");
                // local_address is hex ip:port; st 0A is LISTEN; the inode is the tenth field
                if (f[3].equals("0A") && inodes.contains(f[9])) {
                    ports.add(Integer.parseInt(f[1].substring(f[1].indexOf(':') + 1), 16));
                }
            }
        }
        return ports;
    }
}
