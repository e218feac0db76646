package dev.registrymirror.proxy.blob;

import io.vertx.core.Future;

/**
 * One link of the blob lookup chain ({@link BlobService}): it answers the request, or says what the
 * walk does next. Fails (with a {@code RegistryError}, before anything is sent) when the answer is an
 * error; after bytes were sent, failures break the connection.
 */
interface BlobSource {

    /** What the walk does after a source. */
    enum Next {
        /** The source answered the request. */
        ANSWERED,
        /** The source has nothing for it: ask the next one. */
        NEXT,
        /** Start again from the first source (the blob was stored meanwhile, a stored copy was bad). */
        AGAIN,
        /** The bytes are there, but fetched for another name: confirm the digest with this name's upstream, then start again. */
        CONFIRM,
        /** A download for another name failed this request before anything was sent: start again, with its own name's only. */
        OWN_ONLY
    }

    /** A source's outcome; {@code why} says it for {@link Next#AGAIN} (it ends up in a 503 after three walks). */
    record Step(Next next, String why) {
        static final Step ANSWERED = new Step(Next.ANSWERED, null);
        static final Step NEXT = new Step(Next.NEXT, null);
        static final Step CONFIRM = new Step(Next.CONFIRM, null);
        static final Step OWN_ONLY = new Step(Next.OWN_ONLY, null);

        static Step again(String why) {
            return new Step(Next.AGAIN, why);
        }
    }

    Future<Step> answer(BlobRequest r);
}
