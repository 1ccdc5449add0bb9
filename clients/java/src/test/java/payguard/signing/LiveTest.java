package payguard.signing;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.time.Clock;
import java.time.Duration;
import java.util.HexFormat;
import java.util.Map;

/**
 * Live test against a running payguard (clients/test starts one, with clients/echo-backend.py
 * behind it): a signed request is answered 200 and reaches the backend as the canonical request
 * it signed, a replayed nonce 409, a timestamp outside the window 401. Exits 1 on failure.
 *
 * <pre>PAYGUARD_URL=... PAYGUARD_KEY_ID=... PAYGUARD_SECRET=... java -cp CLASSES payguard.signing.LiveTest</pre>
 */
public final class LiveTest {
    private static final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
    private static int failures;

    private static void check(String what, Object got, Object want) {
        if (!String.valueOf(got).equals(String.valueOf(want))) {
            System.out.println("FAIL " + what + ": got <" + got + ">, want <" + want + ">");
            failures++;
        }
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> send(HttpRequest req, int wantStatus, String what) throws Exception {
        HttpResponse<String> resp = http.send(req, HttpResponse.BodyHandlers.ofString());
        check(what + " status", resp.statusCode(), wantStatus);
        return (Map<String, Object>) Json.parse(resp.body());
    }

    public static void main(String[] args) throws Exception {
        String base = System.getenv("PAYGUARD_URL");
        String keyId = System.getenv("PAYGUARD_KEY_ID");
        String secret = System.getenv("PAYGUARD_SECRET");
        if (base == null || keyId == null || secret == null) {
            System.out.println("FAIL the live test needs PAYGUARD_URL, PAYGUARD_KEY_ID and PAYGUARD_SECRET (clients/test sets them)");
            System.exit(1);
        }
        base = base.replaceAll("/$", "");
        PgSigner signer = new PgSigner(keyId, secret);

        byte[] body = "{\"sku\":\"A-1\",\"note\":\"你好 ✓\"}".getBytes(StandardCharsets.UTF_8);
        URI uri = URI.create(base + "/v1/orders/%e4%bd%a0?b=2&a=1&q=x+y");
        Signed signed = signer.sign("POST", uri, body);
        HttpRequest post = signed.applyTo(HttpRequest.newBuilder(uri))
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofByteArray(body))
                .build();
        Map<String, Object> got = send(post, 200, "signed request");
        check("method at the backend", got.get("method"), "POST");
        check("target at the backend", got.get("target"), "/v1/orders/%E4%BD%A0?a=1&b=2&q=x%20y");
        check("target is what was signed", got.get("target"), signed.canonicalPath() + "?" + signed.canonicalQuery());
        check("body at the backend", got.get("body_sha256"),
                HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(body)));

        URI page = URI.create(base + "/v1/orders?page=2");
        Signed once = signer.sign("GET", page, null);
        send(once.applyTo(HttpRequest.newBuilder(page)).GET().build(), 200, "first use of a nonce");
        Map<String, Object> replay = send(once.applyTo(HttpRequest.newBuilder(page)).GET().build(), 409, "replay");
        check("replay code", replay.get("code"), "NONCE_REPLAYED");

        PgSigner late = new PgSigner(keyId, secret.getBytes(StandardCharsets.UTF_8),
                Clock.offset(Clock.systemUTC(), Duration.ofHours(-1)));
        URI orders = URI.create(base + "/v1/orders");
        Map<String, Object> skew = send(late.sign("GET", orders, null).applyTo(HttpRequest.newBuilder(orders)).GET().build(),
                401, "clock skew");
        check("clock skew code", skew.get("code"), "TIMESTAMP_OUT_OF_WINDOW");

        System.out.println(failures == 0 ? "java live: 200 signed, 409 replay, 401 skew as expected" : "java live: " + failures + " failures");
        System.exit(failures == 0 ? 0 : 1);
    }
}
