package payguard.signing;

import java.net.http.HttpRequest;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The four signature header values of one request and the canonical request they cover.
 *
 * @param canonicalPath the path payguard forwards and the signature covers
 * @param canonicalQuery the query payguard forwards and the signature covers
 * @param stringToSign the seven-line string that was signed
 */
public record Signed(
        String keyId,
        String timestamp,
        String nonce,
        String signature,
        String canonicalPath,
        String canonicalQuery,
        String stringToSign) {

    public static final String KEY_HEADER = "X-PG-Key";
    public static final String TIMESTAMP_HEADER = "X-PG-Timestamp";
    public static final String NONCE_HEADER = "X-PG-Nonce";
    public static final String SIGNATURE_HEADER = "X-PG-Signature";

    /** The four headers, by name, in a fixed order. */
    public Map<String, String> headers() {
        Map<String, String> h = new LinkedHashMap<>();
        h.put(KEY_HEADER, keyId);
        h.put(TIMESTAMP_HEADER, timestamp);
        h.put(NONCE_HEADER, nonce);
        h.put(SIGNATURE_HEADER, signature);
        return h;
    }

    /** Sets the four headers on a {@link HttpRequest.Builder}. */
    public HttpRequest.Builder applyTo(HttpRequest.Builder builder) {
        headers().forEach(builder::setHeader);
        return builder;
    }
}
