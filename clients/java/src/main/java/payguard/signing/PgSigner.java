package payguard.signing;

import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.time.Clock;
import java.util.Base64;
import java.util.HexFormat;
import java.util.Objects;
import java.util.regex.Pattern;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/**
 * Signs requests for payguard with PG-HMAC-SHA256 (docs/client-signing.md). JDK only (Java 17+),
 * usable from Kotlin. The path and query are canonicalized exactly as payguard does them; an
 * input payguard would refuse throws {@link SigningException} carrying payguard's problem code.
 *
 * <pre>{@code
 * PgSigner signer = new PgSigner("shop-app", secret);
 * byte[] body = "{\"sku\":\"A-1\"}".getBytes(StandardCharsets.UTF_8);
 * URI uri = URI.create("http://127.0.0.1:8080/v1/orders?b=2&a=1");
 * HttpRequest req = signer.sign("POST", uri, body)
 *     .applyTo(HttpRequest.newBuilder(uri).POST(HttpRequest.BodyPublishers.ofByteArray(body)))
 *     .build();
 * }</pre>
 */
public final class PgSigner {
    /** The first line of the string to sign. */
    public static final String ALGORITHM = "PG-HMAC-SHA256";

    private static final Pattern METHOD = Pattern.compile("[A-Z0-9!#$%&'*+\\-.^_`|~]+");
    private static final Pattern NONCE = Pattern.compile("[A-Za-z0-9_-]{16,64}");
    private static final SecureRandom RANDOM = new SecureRandom();

    private final String keyId;
    private final SecretKeySpec key;
    private final Clock clock;

    /** A signer for one access key, on the system clock. */
    public PgSigner(String keyId, byte[] secret) {
        this(keyId, secret, Clock.systemUTC());
    }

    /** A signer for one access key; {@code clock} gives the timestamps. */
    public PgSigner(String keyId, byte[] secret, Clock clock) {
        if (keyId == null || keyId.isEmpty()) throw new IllegalArgumentException("the key id must not be empty");
        if (secret == null || secret.length == 0) throw new IllegalArgumentException("the secret must not be empty");
        this.keyId = keyId;
        this.key = new SecretKeySpec(secret, "HmacSHA256");
        this.clock = Objects.requireNonNull(clock, "clock");
    }

    /** A signer whose secret is the UTF-8 bytes of {@code secret}. */
    public PgSigner(String keyId, String secret) {
        this(keyId, secret.getBytes(StandardCharsets.UTF_8));
    }

    /**
     * Signs a request to {@code uri} as {@link java.net.http.HttpClient} sends it (its raw path
     * and raw query) at the current time with a fresh nonce. {@code body} is the exact bytes
     * sent (null or empty for none).
     */
    public Signed sign(String method, URI uri, byte[] body) {
        String path = uri.getRawPath() == null || uri.getRawPath().isEmpty() ? "/" : uri.getRawPath();
        return sign(method, path, uri.getRawQuery(), body);
    }

    /**
     * Signs at the current time with a fresh nonce. {@code path} is the path as sent (no '?'),
     * {@code rawQuery} the query without '?' (null for none), {@code body} the exact bytes sent.
     */
    public Signed sign(String method, String path, String rawQuery, byte[] body) {
        return signWith(method, path, rawQuery, body, clock.instant().getEpochSecond(), newNonce());
    }

    /** Signs with the given timestamp (unix seconds) and nonce; for tests and replays. */
    public Signed signWith(String method, String path, String rawQuery, byte[] body, long timestamp, String nonce) {
        Objects.requireNonNull(path, "path");
        if (path.indexOf('?') >= 0 || path.indexOf('#') >= 0) {
            throw new IllegalArgumentException("the path must not contain '?' or '#': pass the query as rawQuery");
        }
        if (method == null || !METHOD.matcher(method).matches()) {
            throw new SigningException("NON_CANONICAL_METHOD", "method_not_upper_case",
                    "the method must be an upper-case token such as POST (methods are case-sensitive)");
        }
        String cpath = Canonical.path(path);
        String cquery = Canonical.query(rawQuery);
        if (nonce == null || !NONCE.matcher(nonce).matches()) {
            throw new SigningException("MISSING_CREDENTIALS", "malformed_nonce",
                    "the nonce must be 16 to 64 characters of A-Z a-z 0-9 _ -");
        }
        String ts = Long.toString(timestamp);
        if (timestamp < 0 || ts.length() > 18) {
            throw new SigningException("TIMESTAMP_OUT_OF_WINDOW", "malformed_timestamp",
                    "the timestamp must be unix seconds in decimal digits");
        }
        try {
            byte[] bodyHash = MessageDigest.getInstance("SHA-256").digest(body == null ? new byte[0] : body);
            String sts = String.join("\n", ALGORITHM, method, cpath, cquery, ts, nonce, HexFormat.of().formatHex(bodyHash));
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(key);
            String signature = Base64.getEncoder().encodeToString(mac.doFinal(sts.getBytes(StandardCharsets.US_ASCII)));
            return new Signed(keyId, ts, nonce, signature, cpath, cquery, sts);
        } catch (GeneralSecurityException e) {
            // SHA-256 and HmacSHA256 are in every Java platform (JCA standard names).
            throw new IllegalStateException("the JDK lacks SHA-256 or HmacSHA256", e);
        }
    }

    /** The canonical path payguard forwards. @throws SigningException for refused forms */
    public static String canonicalPath(String path) {
        return Canonical.path(path);
    }

    /** The canonical query payguard forwards. @throws SigningException for invalid escapes */
    public static String canonicalQuery(String rawQuery) {
        return Canonical.query(rawQuery);
    }

    /** A fresh nonce: 32 characters of [A-Za-z0-9_-] (24 random bytes). */
    public static String newNonce() {
        byte[] b = new byte[24];
        RANDOM.nextBytes(b);
        return Base64.getUrlEncoder().withoutPadding().encodeToString(b);
    }

    @Override
    public String toString() {
        return "PgSigner[keyId=" + keyId + "]"; // never the secret
    }
}
