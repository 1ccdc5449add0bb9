package payguard.signing;

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/**
 * The canonical path and query payguard routes, checks, signs and forwards: a port of
 * src/canonical/path.rs and src/canonical/query.rs (docs/configuration.md, "Route matching and
 * path normalization"; docs/client-signing.md, "Canonical query").
 */
public final class Canonical {
    private Canonical() {}

    private static final String HEX = "0123456789ABCDEF";

    static boolean isUnreserved(int b) {
        return (b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') || (b >= '0' && b <= '9')
                || b == '-' || b == '.' || b == '_' || b == '~';
    }

    /** RFC 3986 pchar less '%': unreserved, sub-delims, ':' and '@' (';' is refused before). */
    private static boolean allowedRawInPath(int b) {
        return isUnreserved(b) || "!$&'()*+,;=:@".indexOf(b) >= 0;
    }

    private static int hexVal(int b) {
        if (b >= '0' && b <= '9') return b - '0';
        if (b >= 'a' && b <= 'f') return b - 'a' + 10;
        if (b >= 'A' && b <= 'F') return b - 'A' + 10;
        return -1;
    }

    /** The byte "%XY" at raw[i] encodes (within raw[..end]), or -1. */
    private static int escapeAt(byte[] raw, int i, int end) {
        if (i + 2 >= end) return -1;
        int hi = hexVal(raw[i + 1] & 0xff);
        int lo = hexVal(raw[i + 2] & 0xff);
        return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
    }

    /**
     * Whether the canonical path continues with two hex digits at raw[at..]: sent raw or as escapes
     * of them ({@code %32%65} is {@code 2e} once canonical), so {@code %25%32%65} is refused like
     * {@code %252e}.
     */
    private static boolean hexPairFollows(byte[] raw, int at) {
        int[] first = canonicalByte(raw, at);
        if (first == null) return false;
        int[] second = canonicalByte(raw, at + first[1]);
        return second != null && hexVal(first[0]) >= 0 && hexVal(second[0]) >= 0;
    }

    /** The canonical byte at raw[j] and how many raw bytes it takes, or null. */
    private static int[] canonicalByte(byte[] raw, int j) {
        if (j >= raw.length) return null;
        if (raw[j] == '%') {
            int d = escapeAt(raw, j, raw.length);
            return d < 0 || !isUnreserved(d) ? null : new int[] {d, 3};
        }
        return new int[] {raw[j] & 0xff, 1};
    }

    private static void pushEscape(StringBuilder out, int b) {
        out.append('%').append(HEX.charAt(b >> 4)).append(HEX.charAt(b & 15));
    }

    private static SigningException pathError(String reason, String detail) {
        return new SigningException("NON_CANONICAL_PATH", reason, detail);
    }

    private static byte[] utf8(String s, String what) {
        try {
            ByteBuffer b = StandardCharsets.UTF_8.newEncoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .encode(CharBuffer.wrap(s));
            byte[] out = new byte[b.remaining()];
            b.get(out);
            return out;
        } catch (CharacterCodingException e) {
            if (what.equals("path")) throw pathError("path_invalid_utf8", "the path does not decode to UTF-8");
            throw new IllegalArgumentException("the " + what + " is not well-formed UTF-16 text");
        }
    }

    private static boolean validUtf8(byte[] bytes, int len) {
        try {
            StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(bytes, 0, len));
            return true;
        } catch (CharacterCodingException e) {
            return false;
        }
    }

    /**
     * Closes the segment that starts at out[segment]; whether it was empty or a dot segment
     * (which leave a trailing slash when last).
     */
    private static boolean closeSegment(StringBuilder out, int segment) {
        String seg = out.substring(segment);
        if (seg.isEmpty() || seg.equals(".")) {
            out.setLength(segment);
            return true;
        }
        if (seg.equals("..")) {
            // Drop this segment and the one before it; at the root there is nothing to drop.
            out.setLength(Math.max(segment - 1, 0));
            out.setLength(out.lastIndexOf("/") + 1);
            if (out.length() == 0) out.append('/');
            return true;
        }
        out.append('/');
        return false;
    }

    /**
     * The canonical form of {@code path} (as sent, without the query). Escapes of unreserved
     * characters are decoded, other escapes upper-cased, characters not allowed raw
     * percent-encoded, repeated slashes merged, "." and ".." resolved.
     *
     * @throws SigningException ({@code NON_CANONICAL_PATH}) for the forms payguard refuses under
     *     its default {@code server.path} policy
     */
    public static String path(String path) {
        byte[] raw = utf8(path, "path");
        if (raw.length == 0 || raw[0] != '/') {
            throw pathError("path_not_origin_form", "the request target must be a path starting with `/`");
        }
        StringBuilder out = new StringBuilder(raw.length + 8).append('/');
        int segment = 1;
        // The decoded bytes from the first non-ASCII one on, to check the path means UTF-8 text.
        byte[] decoded = new byte[raw.length];
        int decodedLen = 0;
        int i = 1;
        while (i < raw.length) {
            int c = raw[i] & 0xff;
            if (c == '/') {
                closeSegment(out, segment);
                segment = out.length();
                i++;
                continue;
            }
            if (c < 0x20 || c == 0x7f) {
                throw pathError("path_control_character", String.format("control character 0x%02X at byte %d of the path", c, i));
            }
            if (c == '\\') {
                throw pathError("path_backslash",
                        "`\\` at byte " + i + " of the path (some servers read it as `/`); encode it or remove it");
            }
            if (c == ';') {
                throw pathError("path_parameter", "`;` path parameter at byte " + i
                        + " of the path (Servlet containers route without it, other servers with it)");
            }
            if (c == '%') {
                int d = escapeAt(raw, i, raw.length);
                if (d < 0) throw pathError("path_invalid_escape", "invalid percent-escape at byte " + i + " of the path");
                if (d < 0x20 || d == 0x7f) {
                    throw pathError("path_control_character", String.format("control character 0x%02X at byte %d of the path", d, i));
                }
                if (d == '/' || d == '\\') {
                    throw pathError("path_encoded_slash", "encoded slash " + new String(raw, i, 3, StandardCharsets.US_ASCII)
                            + " at byte " + i + " of the path (servers disagree on whether it separates segments)");
                }
                if (d == '%' && hexPairFollows(raw, i + 3)) {
                    throw pathError("path_double_encoding",
                            "double percent-encoding at byte " + i + " of the path (`%25` followed by two hex digits)");
                }
                if (isUnreserved(d)) out.append((char) d);
                else pushEscape(out, d);
                if (d >= 0x80 || decodedLen > 0) decoded[decodedLen++] = (byte) d;
                i += 3;
                continue;
            }
            if (c >= 0x80) {
                decoded[decodedLen++] = (byte) c;
                pushEscape(out, c);
            } else {
                if (allowedRawInPath(c)) out.append((char) c);
                else pushEscape(out, c);
                if (decodedLen > 0) decoded[decodedLen++] = (byte) c;
            }
            i++;
        }
        // An empty or dot last segment leaves a trailing slash; after a name, closing appended a
        // '/' that is not part of the path.
        if (!closeSegment(out, segment) && out.length() > 1) out.setLength(out.length() - 1);
        if (decodedLen > 0 && !validUtf8(decoded, decodedLen)) {
            throw pathError("path_invalid_utf8", "the path does not decode to UTF-8");
        }
        return out.toString();
    }

    /** Percent-decodes raw[start..end] with '+' as a space; every '%' needs two hex digits. */
    private static byte[] queryDecode(byte[] raw, int start, int end) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(end - start);
        int i = start;
        while (i < end) {
            int b = raw[i] & 0xff;
            if (b == '%') {
                int d = escapeAt(raw, i, end);
                if (d < 0) {
                    throw new SigningException("NON_CANONICAL_QUERY", "query_invalid_escape",
                            "invalid percent-escape at byte " + i + " of the query");
                }
                out.write(d);
                i += 3;
            } else {
                out.write(b == '+' ? ' ' : b);
                i++;
            }
        }
        return out.toByteArray();
    }

    private static String queryEncode(byte[] bytes) {
        StringBuilder s = new StringBuilder(bytes.length);
        for (byte x : bytes) {
            int b = x & 0xff;
            if (isUnreserved(b)) s.append((char) b);
            else pushEscape(s, b);
        }
        return s.toString();
    }

    /**
     * The canonical form of a raw query (the text after '?', without it; null or empty for
     * none): split on '&' (empty parts dropped), each part on its first '=', decoded ('+' is a
     * space), re-encoded with only unreserved characters raw, sorted by name then value, joined
     * with '&'.
     *
     * @throws SigningException ({@code NON_CANONICAL_QUERY}) for a '%' without two hex digits
     */
    public static String query(String rawQuery) {
        if (rawQuery == null) return "";
        byte[] raw = utf8(rawQuery, "query");
        List<String[]> pairs = new ArrayList<>();
        int start = 0;
        while (start <= raw.length) {
            int end = start;
            while (end < raw.length && raw[end] != '&') end++;
            if (end > start) {
                int eq = start;
                while (eq < end && raw[eq] != '=') eq++;
                String name = queryEncode(queryDecode(raw, start, eq));
                String value = eq < end ? queryEncode(queryDecode(raw, eq + 1, end)) : "";
                pairs.add(new String[] {name, value});
            }
            start = end + 1;
        }
        // Encoded text is ASCII, so String order is byte order.
        pairs.sort(Comparator.<String[], String>comparing(p -> p[0]).thenComparing(p -> p[1]));
        StringBuilder s = new StringBuilder(raw.length + 8);
        for (String[] p : pairs) {
            if (s.length() > 0) s.append('&');
            s.append(p[0]).append('=').append(p[1]);
        }
        return s.toString();
    }
}
