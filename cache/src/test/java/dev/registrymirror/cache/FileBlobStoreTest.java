package dev.registrymirror.cache;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class FileBlobStoreTest {
    @TempDir
    Path root;

    @Test
    void commitMakesTheBlobVisibleAndCountsIt() throws IOException {
        BlobStore store = BlobStore.open(root);
        byte[] bytes = "layer bytes".getBytes(StandardCharsets.UTF_8);
        Digest d = Digest.of("sha256", bytes);
        assertThat(store.find(d)).isEmpty();

        Path temp = store.newTempFile();
        Files.write(temp, bytes);
        assertThat(store.find(d)).isEmpty();
        BlobStore.Blob blob = store.commit(temp, d, bytes.length);
        store.discard(temp);

        assertThat(Files.exists(temp)).isFalse();
        assertThat(store.find(d)).contains(blob);
        assertThat(Files.readAllBytes(blob.path())).isEqualTo(bytes);
        assertThat(blob.path()).startsWith(root);
        assertThat(store.storedBytes()).isEqualTo(bytes.length);
    }

    @Test
    void wrongSizeIsNotCommitted() throws IOException {
        BlobStore store = BlobStore.open(root);
        Path temp = store.newTempFile();
        Files.write(temp, new byte[10]);
        Digest d = Digest.of("sha256", new byte[10]);
        assertThatThrownBy(() -> store.commit(temp, d, 11)).isInstanceOf(IOException.class);
        assertThat(store.find(d)).isEmpty();
    }

    @Test
    void secondCommitOfSameDigestKeepsTheFirst() throws IOException {
        BlobStore store = BlobStore.open(root);
        byte[] bytes = new byte[] {1, 2, 3};
        Digest d = Digest.of("sha256", bytes);
        for (int i = 0; i < 2; i++) {
            Path temp = store.newTempFile();
            Files.write(temp, bytes);
            store.commit(temp, d, 3);
            store.discard(temp);
        }
        assertThat(store.storedBytes()).isEqualTo(3);
    }

    @Test
    void reopeningRemovesLeftoverTempFilesAndCountsStoredBytes() throws IOException {
        BlobStore store = BlobStore.open(root);
        byte[] bytes = new byte[] {9, 9};
        Digest d = Digest.of("sha256", bytes);
        Path temp = store.newTempFile();
        Files.write(temp, bytes);
        store.commit(temp, d, 2);
        Path leftover = store.newTempFile();
        Files.write(leftover, new byte[100]);

        BlobStore reopened = BlobStore.open(root);
        assertThat(Files.exists(leftover)).isFalse();
        assertThat(reopened.find(d)).isPresent();
        assertThat(reopened.storedBytes()).isEqualTo(2);
    }
}
