package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sealpost/relay"
)

// TestOAuth2Login drives the device-code flow against a fake provider:
// the user code is shown, the refresh token lands in the file with mode
// 0600 and is never printed.
func TestOAuth2Login(t *testing.T) {
	t.Parallel()
	const refresh = "M.R3_BAY.refresh-token-secret"
	polls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/devicecode":
			json.NewEncoder(w).Encode(map[string]any{"device_code": "dev-1", "user_code": "ABCD-EFGH", "verification_uri": "https://microsoft.com/devicelogin", "expires_in": 900, "interval": 1})
		case "/token":
			if r.PostForm.Get("device_code") != "dev-1" {
				http.Error(w, "bad device code", http.StatusBadRequest)
				return
			}
			if polls++; polls == 1 {
				w.WriteHeader(http.StatusBadRequest)
				json.NewEncoder(w).Encode(map[string]string{"error": "authorization_pending"})
				return
			}
			json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 3600, "refresh_token": refresh})
		}
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	rtFile := filepath.Join(dir, "refresh-token")
	src := `hostname = "relay.test"
[upstream]
provider = "microsoft365"
username = "relay@contoso.com"
[upstream.oauth2]
client_id = "client"
tenant = "contoso.com"
token_url = "` + srv.URL + `/token"
device_auth_url = "` + srv.URL + `/devicecode"
refresh_token_file = "` + rtFile + `"
[policy]
allow_any_from = true
`
	cfg, err := relay.ParseConfig("test.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := oauth2Login(context.Background(), cfg, relay.DefaultUpstream, "", srv.Client(), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "ABCD-EFGH") || !strings.Contains(out.String(), "https://microsoft.com/devicelogin") {
		t.Errorf("instructions lack the code or URL:\n%s", out.String())
	}
	if strings.Contains(out.String(), refresh) {
		t.Errorf("the refresh token was printed")
	}
	data, err := os.ReadFile(rtFile)
	if err != nil || strings.TrimSpace(string(data)) != refresh {
		t.Fatalf("refresh token file = %q, %v", data, err)
	}
	if fi, _ := os.Stat(rtFile); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
}
