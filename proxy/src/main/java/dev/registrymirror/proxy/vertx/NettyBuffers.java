package dev.registrymirror.proxy.vertx;

import io.netty.buffer.ByteBuf;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.internal.buffer.BufferInternal;

/**
 * The one place that uses a Vert.x internal API ({@code io.vertx.core.internal}): the Netty buffer
 * behind a Vert.x {@link Buffer}, and a Vert.x buffer around a Netty one, without copying. Blob
 * chunks are pooled Netty buffers that the mirror hashes, writes to its file, keeps in a download's
 * window and hands to every reader's socket; Vert.x 5's public {@code Buffer} API only copies
 * ({@code getBytes}, {@code Buffer.buffer(byte[])}), which would cost a copy of every layer for
 * each reader. Vert.x's own zero-copy paths (its file and HTTP code) use the same two methods.
 */
public final class NettyBuffers {
    private NettyBuffers() {
    }

    /** The Netty buffer behind {@code buffer} (its bytes, not a copy; do not release it). */
    public static ByteBuf unwrap(Buffer buffer) {
        return ((BufferInternal) buffer).getByteBuf();
    }

    /** A Vert.x buffer over {@code bytes} (not a copy): writing it to a socket releases it once sent. */
    public static Buffer wrap(ByteBuf bytes) {
        return BufferInternal.buffer(bytes);
    }
}
