package payguard.signing;

/**
 * An input payguard would refuse. {@link #code()} is payguard's problem code
 * ({@code NON_CANONICAL_PATH}, {@code NON_CANONICAL_QUERY}, {@code NON_CANONICAL_METHOD},
 * {@code MISSING_CREDENTIALS}, {@code TIMESTAMP_OUT_OF_WINDOW}); {@link #reason()} the finer
 * reason ({@code path_encoded_slash}, ...), as in clients/vectors.json.
 */
public final class SigningException extends IllegalArgumentException {
    private static final long serialVersionUID = 1L;

    private final String code;
    private final String reason;

    public SigningException(String code, String reason, String detail) {
        super(detail + " (" + code + ", " + reason + ")");
        this.code = code;
        this.reason = reason;
    }

    /** payguard's problem code, e.g. {@code NON_CANONICAL_PATH}. */
    public String code() {
        return code;
    }

    /** The finer reason, e.g. {@code path_encoded_slash}. */
    public String reason() {
        return reason;
    }
}
