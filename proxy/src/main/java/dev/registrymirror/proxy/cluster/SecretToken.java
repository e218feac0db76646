package dev.registrymirror.proxy.cluster;

import java.io.DataInput;
import java.io.DataOutput;
import java.io.IOException;
import java.security.MessageDigest;
import org.jgroups.Message;
import org.jgroups.auth.AuthToken;

/**
 * What a replica shows to join the cluster (JGroups' {@code AUTH}): an HMAC of the cluster's name
 * under its secret, never the secret. The coordinator lets in only a joiner whose token equals its
 * own, compared in constant time. (The traffic is also encrypted with a key derived from the secret,
 * so a host without it cannot even read the discovery messages.)
 */
public final class SecretToken extends AuthToken {
    private byte[] proof = new byte[0];

    /** For JGroups, which makes received tokens by reflection. */
    public SecretToken() {
    }

    SecretToken(byte[] proof) {
        this.proof = proof.clone();
    }

    @Override
    public String getName() {
        return SecretToken.class.getName();
    }

    @Override
    public int size() {
        return Integer.BYTES + proof.length;
    }

    @Override
    public boolean authenticate(AuthToken token, Message msg) {
        return token instanceof SecretToken other && proof.length > 0 && MessageDigest.isEqual(proof, other.proof);
    }

    @Override
    public void writeTo(DataOutput out) throws IOException {
        out.writeInt(proof.length);
        out.write(proof);
    }

    @Override
    public void readFrom(DataInput in) throws IOException {
        int n = in.readInt();
        if (n < 0 || n > 64) {
            throw new IOException("not a cluster token");
        }
        proof = new byte[n];
        in.readFully(proof);
    }
}
