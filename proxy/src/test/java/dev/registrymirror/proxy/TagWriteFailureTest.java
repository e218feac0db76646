package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import ch.qos.logback.classic.spi.ILoggingEvent;
import java.io.IOException;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Comparator;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/** A disk that cannot take a tag's new check time is a disk error, not an upstream failure. */
class TagWriteFailureTest extends MirrorTestBase {

    static double sum(String exposition, String name) {
        return exposition.lines().filter(l -> l.startsWith(name + "{") || l.startsWith(name + " "))
                .mapToDouble(l -> Double.parseDouble(l.substring(l.lastIndexOf(' ') + 1))).sum();
    }

    @Test
    void aTagThatCannotBeWrittenDuringARevalidationIsCountedAsADiskErrorAndServedAsCurrent() throws IOException {
        hub.putImage("library/alpine", "3.19", randomBytes(1000, 1));
        startMirror();
        assertThat(get("/v2/library/alpine/manifests/3.19", "Accept", TYPES).statusCode()).isEqualTo(200);
        // The tag's folder becomes a file: its next write fails (whoever runs the test, root too).
        Path folder = storage.resolve("tags/docker.io/library/alpine/_tags");
        try (Stream<Path> files = Files.walk(folder)) {
            files.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        }
        Files.writeString(folder, "in the way");
        clock.advance(Duration.ofMinutes(6));

        HttpResponse<byte[]> r = get("/v2/library/alpine/manifests/3.19", "Accept", TYPES);
        assertThat(r.statusCode()).isEqualTo(200);
        assertThat(hub.count("registry", "HEAD", "/manifests/3.19")).as("revalidated").isPositive();
        String metrics = mirror.metrics().scrape();
        assertThat(sum(metrics, "registrymirror_stale_served_total")).as("the upstream answered: nothing stale").isZero();
        assertThat(Exposition.value(metrics, "registrymirror_storage_errors_total{reason=\"io\"}")).isEqualTo(1);
        assertThat(logged.list).extracting(ILoggingEvent::getFormattedMessage)
                .anyMatch(m -> m.startsWith("cannot store tag library/alpine:3.19"))
                .noneMatch(m -> m.contains("serving expired tag"));
    }
}
