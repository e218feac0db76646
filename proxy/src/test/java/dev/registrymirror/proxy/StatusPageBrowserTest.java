package dev.registrymirror.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import dev.registrymirror.cache.Digest;
import java.io.File;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.openqa.selenium.By;
import org.openqa.selenium.OutputType;
import org.openqa.selenium.WebElement;
import org.openqa.selenium.chrome.ChromeDriver;
import org.openqa.selenium.chrome.ChromeDriverService;
import org.openqa.selenium.chrome.ChromeOptions;

/**
 * The status page in Debian's Chromium, driven by Debian's chromedriver (both given by path: nothing
 * is downloaded): what it shows while a download is under way, and that it updates itself.
 */
class StatusPageBrowserTest extends MirrorTestBase {
    /** Where the screenshot goes; the README's is a copy of one. */
    static final Path SCREENSHOT = Path.of("target", "status-page.png");
    ChromeDriver browser;

    @AfterEach
    void closeBrowser() {
        if (browser != null) {
            browser.quit();
        }
    }

    private ChromeDriver browser() {
        ChromeOptions options = new ChromeOptions();
        options.setBinary(RealParts.require("chromium"));
        options.addArguments("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,1150", "--hide-scrollbars", "--lang=en-GB");
        ChromeDriverService service = new ChromeDriverService.Builder()
                .usingDriverExecutable(new File(RealParts.require("chromedriver"))).usingAnyFreePort().build();
        return new ChromeDriver(service, options);
    }

    @Test
    void thePageShowsTheMirrorAndUpdatesItself() throws Exception {
        hub.putImage("library/alpine", "3.19", randomBytes(50_000, 41));
        hub.putImage("library/alpine", "3.20", randomBytes(50_000, 42));
        hub.putImage("acme/ci-runner", "stable", randomBytes(50_000, 43));
        byte[] big = randomBytes(4_000_000, 44);
        hub.putImage("library/postgres", "16", big);
        startMirror();
        for (int i = 0; i < 3; i++) {
            assertThat(get("/v2/library/alpine/manifests/3.19", "Accept", TYPES).statusCode()).isEqualTo(200);
        }
        assertThat(get("/v2/acme/ci-runner/manifests/stable", "Accept", TYPES).statusCode()).isEqualTo(200);
        assertThat(get("/v2/library/postgres/manifests/16", "Accept", TYPES).statusCode()).isEqualTo(200);
        hub.holdSecondHalf = io.vertx.core.Promise.promise(); // the layer stops halfway until released
        CompletableFuture<byte[]> client = CompletableFuture.supplyAsync(
                () -> get("/v2/library/postgres/blobs/" + Digest.of("sha256", big)).body());
        await(hub.firstHalfSent.future());

        browser = browser();
        browser.get(url("/"));
        WebElement bar = awaitElement(() -> browser.findElements(By.cssSelector("#downloads [role=progressbar]")));
        assertThat(bar.getAttribute("aria-valuemax")).isEqualTo(Integer.toString(big.length));
        awaitTrue("the download's first half shown", () ->
                Long.parseLong(browser.findElement(By.cssSelector("#downloads [role=progressbar]"))
                        .getAttribute("aria-valuenow")) >= big.length / 2);
        String downloads = browser.findElement(By.id("downloads")).getText();
        assertThat(downloads).contains("docker.io/library/postgres").contains("of 3.8 MiB").containsPattern("/s");

        assertThat(browser.findElement(By.id("version")).getText()).isEqualTo(Mirror.VERSION);
        assertThat(browser.findElement(By.id("summary")).getText()).startsWith("Up ");
        assertThat(browser.findElement(By.id("hit-ratio")).getText()).matches("\\d+\\.\\d %");
        assertThat(browser.findElement(By.id("hits")).getText()).matches("\\d+ hits, \\d+ misses since start");
        String upstreams = browser.findElement(By.id("upstreams")).getText();
        assertThat(upstreams).contains("docker.io").contains("up").contains(Integer.toString(hub.rateRemaining.get()));
        String top = browser.findElement(By.id("top")).getText();
        assertThat(top).containsPattern("docker.io/library/alpine\\s+3");
        assertThat(top.indexOf("docker.io/library/alpine")).isLessThan(top.indexOf("docker.io/acme/ci-runner"));
        assertThat(browser.findElement(By.id("storage-detail")).getText()).contains("no size limit").contains("free on disk");
        assertThat(browser.findElement(By.id("cluster")).isDisplayed()).as("no cluster section alone").isFalse();

        Files.createDirectories(SCREENSHOT.getParent());
        Files.write(SCREENSHOT, browser.getScreenshotAs(OutputType.BYTES));

        // Without a reload: the download ends and a new pull is counted, and the page shows both.
        hub.holdSecondHalf.complete();
        assertThat(client.get(20, TimeUnit.SECONDS)).isEqualTo(big);
        assertThat(get("/v2/library/alpine/manifests/3.20", "Accept", TYPES).statusCode()).isEqualTo(200);
        awaitTrue("the page shows no download any more", () ->
                browser.findElement(By.id("downloads")).getText().contains("none now"));
        awaitTrue("the page counts the new pull", () ->
                browser.findElement(By.id("top")).getText().matches("(?s).*docker.io/library/alpine\\s+4.*"));
    }

    /** A cluster's section: its members (this one marked), copies, and the traffic between replicas. */
    String cluster = "";

    @Override
    String topLevelYaml() {
        return cluster;
    }

    @Test
    void aReplicaShowsItsCluster() throws Exception {
        cluster = clusterOfOne("lan");
        startMirror();
        browser = browser();
        browser.get(url("/"));
        awaitTrue("the cluster's section shows the members", () -> browser.findElement(By.id("cluster")).isDisplayed()
                && browser.findElement(By.id("members")).getText().contains("(this one)"));
        assertThat(browser.findElement(By.id("members")).getText())
                .contains("http://127.0.0.1:" + serverPort + " (this one)").contains("up");
        assertThat(browser.findElement(By.id("cluster-name")).getText()).isEqualTo("lan, 1 copy of each blob");
        assertThat(browser.findElement(By.id("cluster-summary")).getText())
                .contains("Between replicas: 0 requests to owners").contains("membership changes since start");
    }

    @Test
    void hostedRepositoriesShowApartFromTheCache() throws Exception {
        cluster = """
                hosted: {repositories: ["team/**"], maxSize: 10MiB}
                access:
                  rules:
                    - {repositories: ["team/**"], pull: [anonymous], push: [anonymous]}
                    - {repositories: ["**"], pull: [anonymous]}
                """;
        startMirror();
        byte[] layer = randomBytes(3_000_000, 45);
        assertThat(http.send(java.net.http.HttpRequest.newBuilder(java.net.URI.create(url("/v2/team/app/blobs/uploads/?digest="
                + Digest.of("sha256", layer)))).POST(java.net.http.HttpRequest.BodyPublishers.ofByteArray(layer)).build(),
                java.net.http.HttpResponse.BodyHandlers.discarding()).statusCode()).isEqualTo(201);
        String manifest = "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":"
                + "{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"" + Digest.of("sha256", layer)
                + "\",\"size\":" + layer.length + "},\"layers\":[]}";
        for (String tag : new String[] {"1.0", "1.1"}) {
            assertThat(http.send(java.net.http.HttpRequest.newBuilder(java.net.URI.create(url("/v2/team/app/manifests/" + tag)))
                    .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                    .PUT(java.net.http.HttpRequest.BodyPublishers.ofString(manifest)).build(),
                    java.net.http.HttpResponse.BodyHandlers.discarding()).statusCode()).isEqualTo(201);
        }
        browser = browser();
        browser.get(url("/"));
        awaitTrue("the hosted section lists team/app", () -> browser.findElement(By.id("hosted")).isDisplayed()
                && browser.findElement(By.id("hosted-repos")).getText().contains("team/app"));
        assertThat(browser.findElement(By.id("hosted-repos")).getText()).contains("team/app 2 1");
        assertThat(browser.findElement(By.id("hosted-summary")).getText())
                .startsWith("2.9 MiB of 10.0 MiB in 1 blobs and 1 manifests, never evicted; 0 uploads open");
        WebElement quota = browser.findElement(By.cssSelector("#hosted-bar [role=progressbar]"));
        assertThat(quota.getAttribute("aria-valuemax")).isEqualTo(Long.toString(10L << 20));
    }

    private static WebElement awaitElement(Supplier<java.util.List<WebElement>> find) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (true) {
            java.util.List<WebElement> found = find.get();
            if (!found.isEmpty()) {
                return found.get(0);
            }
            assertThat(System.nanoTime()).as("the element appeared within 20 s").isLessThan(deadline);
            Thread.sleep(50); // polling the page's own work, not waiting for time to pass
        }
    }

}
