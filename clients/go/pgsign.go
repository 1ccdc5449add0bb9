// Package pgsign signs requests for payguard with PG-HMAC-SHA256 (docs/client-signing.md in
// the payguard repository). Standard library only.
//
// The canonical path and query are computed exactly as payguard computes them
// (src/canonical/path.rs and src/canonical/query.rs); an input payguard would refuse returns an
// *Error carrying the problem code and reason payguard would answer with, before anything is
// sent.
package pgsign

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Algorithm is the first line of the string to sign.
const Algorithm = "PG-HMAC-SHA256"

// The default header names (an operator may rename them in payguard's config).
const (
	HeaderKey       = "X-PG-Key"
	HeaderTimestamp = "X-PG-Timestamp"
	HeaderNonce     = "X-PG-Nonce"
	HeaderSignature = "X-PG-Signature"
)

// Error is an input payguard would refuse. Code is payguard's problem code
// (NON_CANONICAL_PATH, NON_CANONICAL_QUERY, NON_CANONICAL_METHOD, MISSING_CREDENTIALS,
// TIMESTAMP_OUT_OF_WINDOW), Reason the finer reason (path_encoded_slash, ...), as in
// clients/vectors.json.
type Error struct {
	Code   string
	Reason string
	Detail string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (%s, %s)", e.Detail, e.Code, e.Reason)
}

func pathError(reason, format string, args ...any) *Error {
	return &Error{Code: "NON_CANONICAL_PATH", Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

func isUnreserved(b byte) bool {
	return b >= 'A' && b <= 'Z' || b >= 'a' && b <= 'z' || b >= '0' && b <= '9' ||
		b == '-' || b == '.' || b == '_' || b == '~'
}

// allowedRawInPath: RFC 3986 pchar less '%' — unreserved, sub-delims, ':' and '@' (';' is
// refused before this is asked).
func allowedRawInPath(b byte) bool {
	return isUnreserved(b) || strings.IndexByte("!$&'()*+,;=:@", b) >= 0
}

func hexVal(b byte) int {
	switch {
	case b >= '0' && b <= '9':
		return int(b - '0')
	case b >= 'a' && b <= 'f':
		return int(b-'a') + 10
	case b >= 'A' && b <= 'F':
		return int(b-'A') + 10
	}
	return -1
}

// escapeAt is the byte "%XY" at s[i] encodes, or -1.
func escapeAt(s string, i int) int {
	if i+2 >= len(s) {
		return -1
	}
	hi, lo := hexVal(s[i+1]), hexVal(s[i+2])
	if hi < 0 || lo < 0 {
		return -1
	}
	return hi*16 + lo
}

// hexPairFollows: whether the canonical path continues with two hex digits at s[at:], sent raw
// or as escapes of them (`%32%65` is `2e` once canonical), so `%25%32%65` is refused like `%252e`.
func hexPairFollows(s string, at int) bool {
	canonicalByte := func(j int) (byte, int, bool) {
		if j >= len(s) {
			return 0, 0, false
		}
		if s[j] == '%' {
			d := escapeAt(s, j)
			if d < 0 || !isUnreserved(byte(d)) {
				return 0, 0, false
			}
			return byte(d), 3, true
		}
		return s[j], 1, true
	}
	first, width, ok := canonicalByte(at)
	if !ok {
		return false
	}
	second, _, ok := canonicalByte(at + width)
	return ok && hexVal(first) >= 0 && hexVal(second) >= 0
}

const upperHex = "0123456789ABCDEF"

func pushEscape(out []byte, b byte) []byte {
	return append(out, '%', upperHex[b>>4], upperHex[b&15])
}

// closeSegment closes the segment starting at out[segment]; it reports whether the segment was
// empty or a dot segment (which leave a trailing slash when last).
func closeSegment(out []byte, segment int) ([]byte, bool) {
	switch string(out[segment:]) {
	case "", ".":
		return out[:segment], true
	case "..":
		// Drop this segment and the one before it; at the root there is nothing to drop.
		if segment > 0 {
			out = out[:segment-1]
		}
		out = out[:bytes.LastIndexByte(out, '/')+1]
		if len(out) == 0 {
			out = append(out, '/')
		}
		return out, true
	}
	return append(out, '/'), false
}

// CanonicalPath is the canonical form of path (as sent, without the query): the path payguard
// routes, checks, signs and forwards. Escapes of unreserved characters are decoded, other
// escapes upper-cased, characters not allowed raw percent-encoded, repeated slashes merged,
// "." and ".." resolved. Forms payguard refuses under its default server.path policy return
// an *Error with Code NON_CANONICAL_PATH.
func CanonicalPath(path string) (string, error) {
	if !strings.HasPrefix(path, "/") {
		return "", pathError("path_not_origin_form", "the request target must be a path starting with `/`")
	}
	out := make([]byte, 1, len(path)+8)
	out[0] = '/'
	segment := 1
	// The decoded bytes from the first non-ASCII one on, to check the path means UTF-8 text.
	var decoded []byte
	for i := 1; i < len(path); {
		c := path[i]
		switch {
		case c == '/':
			out, _ = closeSegment(out, segment)
			segment = len(out)
			i++
			continue
		case c < 0x20 || c == 0x7f:
			return "", pathError("path_control_character", "control character 0x%02X at byte %d of the path", c, i)
		case c == '\\':
			return "", pathError("path_backslash", "`\\` at byte %d of the path (some servers read it as `/`); encode it or remove it", i)
		case c == ';':
			return "", pathError("path_parameter", "`;` path parameter at byte %d of the path (Servlet containers route without it, other servers with it)", i)
		case c == '%':
			d := escapeAt(path, i)
			switch {
			case d < 0:
				return "", pathError("path_invalid_escape", "invalid percent-escape at byte %d of the path", i)
			case d < 0x20 || d == 0x7f:
				return "", pathError("path_control_character", "control character 0x%02X at byte %d of the path", d, i)
			case d == '/' || d == '\\':
				return "", pathError("path_encoded_slash", "encoded slash %s at byte %d of the path (servers disagree on whether it separates segments)", path[i:i+3], i)
			case d == '%' && hexPairFollows(path, i+3):
				return "", pathError("path_double_encoding", "double percent-encoding at byte %d of the path (`%%25` followed by two hex digits)", i)
			}
			if isUnreserved(byte(d)) {
				out = append(out, byte(d))
			} else {
				out = pushEscape(out, byte(d))
			}
			if d >= 0x80 || len(decoded) > 0 {
				decoded = append(decoded, byte(d))
			}
			i += 3
			continue
		case c >= 0x80:
			decoded = append(decoded, c)
			out = pushEscape(out, c)
		default:
			if allowedRawInPath(c) {
				out = append(out, c)
			} else {
				out = pushEscape(out, c)
			}
			if len(decoded) > 0 {
				decoded = append(decoded, c)
			}
		}
		i++
	}
	// An empty or dot last segment leaves a trailing slash; after a name, closing appended a '/'
	// that is not part of the path.
	out, trailing := closeSegment(out, segment)
	if !trailing && len(out) > 1 {
		out = out[:len(out)-1]
	}
	if len(decoded) > 0 && !utf8.Valid(decoded) {
		return "", pathError("path_invalid_utf8", "the path does not decode to UTF-8")
	}
	return string(out), nil
}

// queryDecode percent-decodes with '+' as a space, as every query decoder does; every '%' needs
// two hex digits. offset is where s starts in the raw query.
func queryDecode(s string, offset int) ([]byte, error) {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		switch s[i] {
		case '%':
			d := escapeAt(s, i)
			if d < 0 {
				return nil, &Error{Code: "NON_CANONICAL_QUERY", Reason: "query_invalid_escape",
					Detail: fmt.Sprintf("invalid percent-escape at byte %d of the query", offset+i)}
			}
			out = append(out, byte(d))
			i += 3
		case '+':
			out = append(out, ' ')
			i++
		default:
			out = append(out, s[i])
			i++
		}
	}
	return out, nil
}

func queryEncode(b []byte) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if isUnreserved(c) {
			out = append(out, c)
		} else {
			out = pushEscape(out, c)
		}
	}
	return string(out)
}

// CanonicalQuery is the canonical form of a raw query (the text after '?', without it): split
// on '&' (empty parts dropped), each part on its first '=', decoded ('+' is a space),
// re-encoded with only unreserved characters raw, sorted by name then value, joined with '&'.
// A '%' without two hex digits returns an *Error with Code NON_CANONICAL_QUERY.
func CanonicalQuery(rawQuery string) (string, error) {
	type pair struct{ name, value string }
	var pairs []pair
	offset := 0
	for _, part := range strings.Split(rawQuery, "&") {
		partOffset := offset
		offset += len(part) + 1
		if part == "" {
			continue
		}
		name, value, found := strings.Cut(part, "=")
		valueOffset := partOffset + len(part)
		if found {
			valueOffset = partOffset + len(name) + 1
		}
		n, err := queryDecode(name, partOffset)
		if err != nil {
			return "", err
		}
		v, err := queryDecode(value, valueOffset)
		if err != nil {
			return "", err
		}
		pairs = append(pairs, pair{queryEncode(n), queryEncode(v)})
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].name != pairs[j].name {
			return pairs[i].name < pairs[j].name
		}
		return pairs[i].value < pairs[j].value
	})
	var b strings.Builder
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.name)
		b.WriteByte('=')
		b.WriteString(p.value)
	}
	return b.String(), nil
}

func checkMethod(method string) error {
	ok := method != ""
	for i := 0; i < len(method) && ok; i++ {
		c := method[i]
		ok = c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
	}
	if !ok {
		return &Error{Code: "NON_CANONICAL_METHOD", Reason: "method_not_upper_case",
			Detail: "the method must be an upper-case token such as POST (methods are case-sensitive)"}
	}
	return nil
}

func checkNonce(nonce string) error {
	ok := len(nonce) >= 16 && len(nonce) <= 64
	for i := 0; i < len(nonce) && ok; i++ {
		c := nonce[i]
		ok = isUnreserved(c) && c != '.' && c != '~'
	}
	if !ok {
		return &Error{Code: "MISSING_CREDENTIALS", Reason: "malformed_nonce",
			Detail: "the nonce must be 16 to 64 characters of A-Z a-z 0-9 _ -"}
	}
	return nil
}

func timestampText(ts int64) (string, error) {
	text := strconv.FormatInt(ts, 10)
	if ts < 0 || len(text) > 18 {
		return "", &Error{Code: "TIMESTAMP_OUT_OF_WINDOW", Reason: "malformed_timestamp",
			Detail: "the timestamp must be unix seconds in decimal digits"}
	}
	return text, nil
}

// NewNonce is a fresh nonce: 32 characters of [A-Za-z0-9_-] (24 random bytes).
func NewNonce() string {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("pgsign: no randomness: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Signed holds the four header values of one signed request and the canonical request they
// cover.
type Signed struct {
	KeyID, Timestamp, Nonce, Signature string
	// CanonicalPath and CanonicalQuery are what payguard forwards and the signature covers.
	CanonicalPath, CanonicalQuery string
	// StringToSign is the seven-line string that was signed.
	StringToSign string
}

// Apply sets the four signature headers on h.
func (s *Signed) Apply(h http.Header) {
	h.Set(HeaderKey, s.KeyID)
	h.Set(HeaderTimestamp, s.Timestamp)
	h.Set(HeaderNonce, s.Nonce)
	h.Set(HeaderSignature, s.Signature)
}

// Headers returns the four signature headers as a map keyed by their names.
func (s *Signed) Headers() map[string]string {
	return map[string]string{HeaderKey: s.KeyID, HeaderTimestamp: s.Timestamp, HeaderNonce: s.Nonce, HeaderSignature: s.Signature}
}

// Signer signs requests with one access key.
type Signer struct {
	KeyID  string
	Secret []byte
	// Now is the clock (default time.Now); NewNonce the nonce source (default NewNonce).
	Now      func() time.Time
	NewNonce func() string
}

// Sign signs a request at the current time with a fresh nonce. path and rawQuery are what the
// request line carries (the query without '?'), body the exact bytes sent (nil for none).
func (s Signer) Sign(method, path, rawQuery string, body []byte) (*Signed, error) {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	nonce := NewNonce
	if s.NewNonce != nil {
		nonce = s.NewNonce
	}
	return s.SignWith(method, path, rawQuery, body, now().Unix(), nonce())
}

// SignWith signs with the given timestamp (unix seconds) and nonce; for tests and replays.
func (s Signer) SignWith(method, path, rawQuery string, body []byte, timestamp int64, nonce string) (*Signed, error) {
	if s.KeyID == "" || len(s.Secret) == 0 {
		return nil, errors.New("pgsign: Signer needs a KeyID and a Secret")
	}
	if strings.ContainsAny(path, "?#") {
		return nil, errors.New("pgsign: the path must not contain '?' or '#'; pass the query as rawQuery")
	}
	if err := checkMethod(method); err != nil {
		return nil, err
	}
	cpath, err := CanonicalPath(path)
	if err != nil {
		return nil, err
	}
	cquery, err := CanonicalQuery(rawQuery)
	if err != nil {
		return nil, err
	}
	if err := checkNonce(nonce); err != nil {
		return nil, err
	}
	ts, err := timestampText(timestamp)
	if err != nil {
		return nil, err
	}
	bodyHash := sha256.Sum256(body)
	sts := strings.Join([]string{Algorithm, method, cpath, cquery, ts, nonce, hex.EncodeToString(bodyHash[:])}, "\n")
	mac := hmac.New(sha256.New, s.Secret)
	mac.Write([]byte(sts))
	return &Signed{
		KeyID: s.KeyID, Timestamp: ts, Nonce: nonce,
		Signature:     base64.StdEncoding.EncodeToString(mac.Sum(nil)),
		CanonicalPath: cpath, CanonicalQuery: cquery, StringToSign: sts,
	}, nil
}

// SignRequest signs req as net/http will send it (req.URL.RequestURI()) and sets the four
// headers. The body is read into memory and replaced by an identical one (GetBody included),
// so the bytes signed are the bytes sent.
func (s Signer) SignRequest(req *http.Request) error {
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return fmt.Errorf("pgsign: reading the body: %w", err)
		}
		body = b
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
		req.ContentLength = int64(len(b))
	}
	path, query, _ := strings.Cut(req.URL.RequestURI(), "?")
	signed, err := s.Sign(req.Method, path, query, body)
	if err != nil {
		return err
	}
	signed.Apply(req.Header)
	return nil
}

// Transport is an http.RoundTripper that signs every request with Signer before Base (default
// http.DefaultTransport) sends it. Each attempt gets a fresh nonce, so retries are not replays.
type Transport struct {
	Signer Signer
	Base   http.RoundTripper
}

// RoundTrip signs a copy of req and sends it.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	if err := t.Signer.SignRequest(r); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(r)
}
