package dev.registrymirror.proxy.access;

import java.util.List;

/**
 * Who a client is: a user of the htpasswd file (by password or by one of the mirror's tokens), a
 * client certificate's names (its CN and DNS SANs), or nobody in particular.
 *
 * @param names the names rules may list; empty for an anonymous client
 * @param how   how the client said who it is
 */
public record Identity(List<String> names, How how) {
    /** How a client said who it is. */
    public enum How {
        /** Nothing: no credentials, no certificate. */
        NONE,
        /** One of the mirror's anonymous tokens. */
        ANONYMOUS_TOKEN,
        /** Basic credentials of a user. */
        PASSWORD,
        /** One of the mirror's tokens, issued to a user. */
        TOKEN,
        /** A client certificate's names. */
        CERTIFICATE
    }

    /** In a rule: everyone, with credentials or without. */
    public static final String ANONYMOUS = "anonymous";
    /** In a rule: any user or client certificate. */
    public static final String AUTHENTICATED = "authenticated";
    public static final Identity NOBODY = new Identity(List.of(), How.NONE);
    public static final Identity ANONYMOUS_TOKEN = new Identity(List.of(), How.ANONYMOUS_TOKEN);

    public boolean authenticated() {
        return !names.isEmpty();
    }

    /** The name logs show: the first name, or {@code anonymous}. */
    public String display() {
        return names.isEmpty() ? ANONYMOUS : names.get(0);
    }

    /** Whether a list of a rule (or of {@code access.metrics}, {@code access.admin}) includes this client. */
    public boolean in(List<String> principals) {
        for (String p : principals) {
            if (p.equals(ANONYMOUS) || p.equals(AUTHENTICATED) && authenticated() || names.contains(p)) {
                return true;
            }
        }
        return false;
    }
}
