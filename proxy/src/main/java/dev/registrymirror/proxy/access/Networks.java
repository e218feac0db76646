package dev.registrymirror.proxy.access;

import java.net.InetAddress;
import java.net.UnknownHostException;
import java.util.ArrayList;
import java.util.List;

/** {@code access.networks}: CIDR blocks, IPv4 and IPv6 (an IPv4-mapped IPv6 address counts as IPv4). */
public final class Networks {
    private record Block(byte[] network, int bits) {
    }

    private final List<Block> blocks = new ArrayList<>();

    public Networks(List<String> cidrs) {
        for (String c : cidrs) {
            int slash = c.indexOf('/');
            blocks.add(new Block(bytes(c.substring(0, slash)), Integer.parseInt(c.substring(slash + 1))));
        }
    }

    public boolean isEmpty() {
        return blocks.isEmpty();
    }

    /** Whether {@code address} (a literal IP) is in one of the blocks. */
    public boolean contains(String address) {
        byte[] a = bytes(address);
        if (a == null) {
            return false;
        }
        for (Block b : blocks) {
            if (b.network().length == a.length && prefixMatches(a, b.network(), b.bits())) {
                return true;
            }
        }
        return false;
    }

    private static boolean prefixMatches(byte[] a, byte[] n, int bits) {
        for (int i = 0; i < bits; i++) {
            int mask = 0x80 >> (i % 8);
            if ((a[i / 8] & mask) != (n[i / 8] & mask)) {
                return false;
            }
        }
        return true;
    }

    /** The address's bytes, IPv4-mapped IPv6 as IPv4; null if it is not a literal address. */
    private static byte[] bytes(String literal) {
        if (literal == null || !(literal.indexOf(':') >= 0 || literal.matches("[0-9.]+"))) {
            return null;
        }
        try {
            byte[] b = InetAddress.getByName(literal).getAddress(); // a literal: no lookup
            return b;
        } catch (UnknownHostException e) {
            return null;
        }
    }
}
