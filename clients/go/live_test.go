//go:build live

// Live test against a running payguard (clients/test starts one, with clients/echo-backend.py
// behind it): a signed request is answered 200 and reaches the backend as the canonical request
// it signed, a replayed nonce 409, a timestamp outside the window 401.
//
//	PAYGUARD_URL=... PAYGUARD_KEY_ID=... PAYGUARD_SECRET=... go test -tags live -run Live ./...
package pgsign

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

func liveSigner(t *testing.T) (string, Signer) {
	base, key, secret := os.Getenv("PAYGUARD_URL"), os.Getenv("PAYGUARD_KEY_ID"), os.Getenv("PAYGUARD_SECRET")
	if base == "" || key == "" || secret == "" {
		t.Fatal("the live test needs PAYGUARD_URL, PAYGUARD_KEY_ID and PAYGUARD_SECRET (clients/test sets them)")
	}
	return strings.TrimSuffix(base, "/"), Signer{KeyID: key, Secret: []byte(secret)}
}

// send returns the status and the decoded JSON answer (the echo or a problem).
func send(t *testing.T, req *http.Request) (int, map[string]any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatalf("status %d: %v", resp.StatusCode, err)
	}
	return resp.StatusCode, got
}

func TestLiveSignedRequestReachesTheBackendAsSigned(t *testing.T) {
	base, signer := liveSigner(t)
	body := `{"sku":"A-1","note":"你好 ✓"}`
	client := &http.Client{Transport: &Transport{Signer: signer}}
	req, _ := http.NewRequest("POST", base+"/v1/orders/%e4%bd%a0?b=2&a=1&q=x+y", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&got)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %v", resp.StatusCode, got)
	}
	sum := sha256.Sum256([]byte(body))
	if got["method"] != "POST" || got["target"] != "/v1/orders/%E4%BD%A0?a=1&b=2&q=x%20y" || got["body_sha256"] != hex.EncodeToString(sum[:]) {
		t.Fatalf("the backend got %v", got)
	}
}

func TestLiveReplayedNonceIsRefused(t *testing.T) {
	base, signer := liveSigner(t)
	signed, err := signer.Sign("GET", "/v1/orders", "page=2", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{200, 409} {
		req, _ := http.NewRequest("GET", base+"/v1/orders?page=2", nil)
		signed.Apply(req.Header)
		status, got := send(t, req)
		if status != want || (i == 1 && got["code"] != "NONCE_REPLAYED") {
			t.Fatalf("attempt %d: %d %v", i+1, status, got)
		}
	}
}

func TestLiveTimestampOutsideTheWindowIsRefused(t *testing.T) {
	base, signer := liveSigner(t)
	signer.Now = func() time.Time { return time.Now().Add(-time.Hour) }
	req, _ := http.NewRequest("GET", base+"/v1/orders", nil)
	if err := signer.SignRequest(req); err != nil {
		t.Fatal(err)
	}
	status, got := send(t, req)
	if status != 401 || got["code"] != "TIMESTAMP_OUT_OF_WINDOW" {
		t.Fatalf("%d %v", status, got)
	}
}
