package payguard.signing;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Map;

/**
 * Checks every vector of clients/vectors.json (generated from payguard's own code by
 * tests/client_vectors.rs): canonical request, string to sign and headers match; refused inputs
 * throw SigningException with payguard's code and reason. A main, so plain javac/java run it
 * (clients/java/run-tests); exits 1 on any failure.
 *
 * <pre>java -cp CLASSES payguard.signing.VectorTest clients/vectors.json</pre>
 */
public final class VectorTest {
    private static final List<String> failures = new ArrayList<>();

    private static void check(String name, Object got, Object want) {
        boolean same = got instanceof Map ? got.equals(want) : String.valueOf(got).equals(String.valueOf(want));
        if (!same) {
            failures.add(name + ": got <" + got + ">, want <" + want + ">");
        }
    }

    @SuppressWarnings("unchecked")
    public static void main(String[] args) throws Exception {
        String text = Files.readString(Path.of(args.length > 0 ? args[0] : "../vectors.json"));
        List<Map<String, Object>> vectors = (List<Map<String, Object>>) ((Map<String, Object>) Json.parse(text)).get("vectors");
        int signed = 0;
        int refused = 0;
        for (Map<String, Object> v : vectors) {
            String name = (String) v.get("name");
            byte[] body = v.containsKey("body_base64")
                    ? Base64.getDecoder().decode((String) v.get("body_base64"))
                    : ((String) v.get("body")).getBytes(StandardCharsets.UTF_8);
            PgSigner signer = new PgSigner((String) v.get("key_id"), ((String) v.get("secret")).getBytes(StandardCharsets.UTF_8));
            Map<String, Object> expected = (Map<String, Object>) v.get("expected");
            Map<String, Object> error = (Map<String, Object>) v.get("error");
            try {
                Signed got = signer.signWith((String) v.get("method"), (String) v.get("path"), (String) v.get("query"), body,
                        (Long) v.get("timestamp"), (String) v.get("nonce"));
                if (expected == null) {
                    failures.add(name + ": signed, but payguard refuses it with " + error);
                    continue;
                }
                signed++;
                check(name + " canonical path", got.canonicalPath(), expected.get("canonical_path"));
                check(name + " canonical query", got.canonicalQuery(), expected.get("canonical_query"));
                check(name + " string to sign", got.stringToSign(), expected.get("string_to_sign"));
                check(name + " headers", got.headers(), expected.get("headers"));
                check(name + " path idempotent", PgSigner.canonicalPath(got.canonicalPath()), got.canonicalPath());
                check(name + " query idempotent", PgSigner.canonicalQuery(got.canonicalQuery()), got.canonicalQuery());
            } catch (SigningException e) {
                if (error == null) {
                    failures.add(name + ": refused (" + e.getMessage() + "), payguard signs it");
                    continue;
                }
                refused++;
                check(name + " code", e.code(), error.get("code"));
                check(name + " reason", e.reason(), error.get("reason"));
            }
        }
        if (signed < 10 || refused < 10) failures.add("only " + signed + " signed and " + refused + " refused vectors");
        otherChecks();
        for (String f : failures) System.out.println("FAIL " + f);
        System.out.println(failures.isEmpty()
                ? "java: all " + vectors.size() + " vectors pass (" + signed + " signed, " + refused + " refused)"
                : "java: " + failures.size() + " failures");
        System.exit(failures.isEmpty() ? 0 : 1);
    }

    private static void otherChecks() {
        PgSigner signer = new PgSigner("k", "top-secret-value");
        Signed a = signer.sign("GET", "/", null, null);
        Signed b = signer.sign("GET", "/", null, null);
        if (a.nonce().equals(b.nonce()) || !a.nonce().matches("[A-Za-z0-9_-]{32}")) failures.add("fresh nonces: " + a.nonce());
        if (Math.abs(Long.parseLong(a.timestamp()) - System.currentTimeMillis() / 1000) > 5) failures.add("timestamp now: " + a.timestamp());
        try {
            signer.sign("GET", "/v1?a=1", null, null);
            failures.add("a path with '?' was signed");
        } catch (SigningException e) {
            failures.add("a path with '?' is an argument error, not a payguard refusal");
        } catch (IllegalArgumentException expected) {
            // as documented
        }
        try {
            signer.sign("GET", "/v1/a%2Fb", null, null);
            failures.add("an encoded slash was signed");
        } catch (SigningException e) {
            if (!e.getMessage().contains("encoded slash %2F at byte 5") || e.getMessage().contains("top-secret")) {
                failures.add("refusal message: " + e.getMessage());
            }
        }
        if (signer.toString().contains("top-secret")) failures.add("toString shows the secret");
        Signed viaUri = new PgSigner("shop-app", "pg-test-secret-0001")
                .sign("POST", java.net.URI.create("http://127.0.0.1:8080/v1/orders/%e4%bd%a0?b=2&a=1"), new byte[0]);
        check("URI raw path and query", viaUri.canonicalPath() + "?" + viaUri.canonicalQuery(), "/v1/orders/%E4%BD%A0?a=1&b=2");
    }
}
