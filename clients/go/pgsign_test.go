package pgsign

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// vector is one entry of clients/vectors.json (generated from payguard's own code by
// tests/client_vectors.rs).
type vector struct {
	Name       string  `json:"name"`
	Method     string  `json:"method"`
	Path       string  `json:"path"`
	Query      *string `json:"query"`
	Body       *string `json:"body"`
	BodyBase64 *string `json:"body_base64"`
	KeyID      string  `json:"key_id"`
	Secret     string  `json:"secret"`
	Timestamp  int64   `json:"timestamp"`
	Nonce      string  `json:"nonce"`
	Expected   *struct {
		CanonicalPath  string            `json:"canonical_path"`
		CanonicalQuery string            `json:"canonical_query"`
		StringToSign   string            `json:"string_to_sign"`
		Headers        map[string]string `json:"headers"`
	} `json:"expected"`
	Error *struct {
		Code   string `json:"code"`
		Reason string `json:"reason"`
	} `json:"error"`
}

func loadVectors(t *testing.T) []vector {
	t.Helper()
	data, err := os.ReadFile("../vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct{ Vectors []vector }
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	return file.Vectors
}

func (v vector) body(t *testing.T) []byte {
	if v.BodyBase64 != nil {
		b, err := base64.StdEncoding.DecodeString(*v.BodyBase64)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return []byte(*v.Body)
}

func (v vector) query() string {
	if v.Query == nil {
		return ""
	}
	return *v.Query
}

func (v vector) sign(t *testing.T) (*Signed, error) {
	s := Signer{KeyID: v.KeyID, Secret: []byte(v.Secret)}
	return s.SignWith(v.Method, v.Path, v.query(), v.body(t), v.Timestamp, v.Nonce)
}

func TestVectors(t *testing.T) {
	vectors := loadVectors(t)
	var signed, refused int
	for _, v := range vectors {
		v := v
		t.Run(v.Name, func(t *testing.T) {
			got, err := v.sign(t)
			if v.Expected != nil {
				signed++
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				want := v.Expected
				if got.CanonicalPath != want.CanonicalPath || got.CanonicalQuery != want.CanonicalQuery {
					t.Errorf("canonical %q %q, want %q %q", got.CanonicalPath, got.CanonicalQuery, want.CanonicalPath, want.CanonicalQuery)
				}
				if got.StringToSign != want.StringToSign {
					t.Errorf("string to sign %q, want %q", got.StringToSign, want.StringToSign)
				}
				for name, value := range want.Headers {
					if got.Headers()[name] != value {
						t.Errorf("%s: %q, want %q", name, got.Headers()[name], value)
					}
				}
				if p, _ := CanonicalPath(got.CanonicalPath); p != got.CanonicalPath {
					t.Errorf("canonical path not idempotent: %q", p)
				}
				if q, _ := CanonicalQuery(got.CanonicalQuery); q != got.CanonicalQuery {
					t.Errorf("canonical query not idempotent: %q", q)
				}
				return
			}
			refused++
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("want *Error %+v, got %v", *v.Error, err)
			}
			if e.Code != v.Error.Code || e.Reason != v.Error.Reason {
				t.Errorf("got %s/%s, want %s/%s", e.Code, e.Reason, v.Error.Code, v.Error.Reason)
			}
		})
	}
	if signed < 10 || refused < 10 {
		t.Errorf("only %d signed and %d refused vectors", signed, refused)
	}
}

func TestSignRequestSignsWhatNetHTTPSends(t *testing.T) {
	var v vector
	for _, x := range loadVectors(t) {
		if x.Name == "docs_worked_example" {
			v = x
		}
	}
	var gotTarget, gotBody string
	var gotHeader http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		gotTarget, gotBody, gotHeader = r.RequestURI, string(b), r.Header
	}))
	defer srv.Close()
	client := &http.Client{Transport: &Transport{Signer: Signer{
		KeyID: v.KeyID, Secret: []byte(v.Secret),
		Now:      func() time.Time { return time.Unix(v.Timestamp, 0) },
		NewNonce: func() string { return v.Nonce },
	}}}
	resp, err := client.Post(srv.URL+v.Path+"?"+v.query(), "application/json", strings.NewReader(*v.Body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if gotTarget != v.Path+"?"+v.query() || gotBody != *v.Body {
		t.Fatalf("sent %q %q", gotTarget, gotBody)
	}
	for name, value := range v.Expected.Headers {
		if gotHeader.Get(name) != value {
			t.Errorf("%s: %q, want %q", name, gotHeader.Get(name), value)
		}
	}
}

func TestDefaultsAreNowAndAFreshNonce(t *testing.T) {
	s := Signer{KeyID: "k", Secret: []byte("s")}
	a, err := s.Sign("GET", "/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.Sign("GET", "/", "", nil)
	if a.Nonce == b.Nonce || !regexp.MustCompile(`^[A-Za-z0-9_-]{32}$`).MatchString(a.Nonce) {
		t.Errorf("nonces %q %q", a.Nonce, b.Nonce)
	}
	if ts, _ := strconv.ParseInt(a.Timestamp, 10, 64); ts < time.Now().Unix()-5 || ts > time.Now().Unix() {
		t.Errorf("timestamp %q", a.Timestamp)
	}
}

func TestAPathWithAQueryIsAnArgumentErrorNotASilentPercent3F(t *testing.T) {
	_, err := Signer{KeyID: "k", Secret: []byte("s")}.Sign("GET", "/v1?a=1", "", nil)
	var e *Error
	if err == nil || errors.As(err, &e) {
		t.Fatalf("got %v", err)
	}
}

func TestRefusalsNameTheProblemWithoutTheSecret(t *testing.T) {
	_, err := Signer{KeyID: "k", Secret: []byte("top-secret-value")}.Sign("GET", "/v1/a%2Fb", "", nil)
	if err == nil || !strings.Contains(err.Error(), "encoded slash %2F at byte 5") || strings.Contains(err.Error(), "top-secret") {
		t.Fatalf("got %v", err)
	}
}
