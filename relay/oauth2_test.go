package relay

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"sealpost/certs/certstest"
	"sealpost/upstream/upstreamtest"
)

// TestOAuth2DeadRefreshTokenKeepsMail: a refresh token the provider no
// longer accepts is a temporary failure with a clear log line; the message
// stays queued and goes out once a working token is in place. The
// upstream only accepts the bearer token the endpoint issued.
func TestOAuth2DeadRefreshTokenKeepsMail(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	up := upstreamtest.New(t, upstreamtest.Options{
		TLS:         upstreamtest.TLSStartTLS,
		Certificate: certstest.Leaf(t, ca, "127.0.0.1", "localhost"),
		Tokens:      map[string]string{testUser: "nothing-issued-yet"},
	})
	const refreshToken = "1//refresh-token-do-not-log"
	var mu sync.Mutex
	revoked := true
	issued := 0
	tokenSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if revoked || r.PostForm.Get("refresh_token") != refreshToken {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
			return
		}
		issued++
		tok := "ya29.access-token-" + strings.Repeat("z", issued)
		up.SetToken(testUser, tok)
		json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 3599})
	}))
	t.Cleanup(tokenSrv.Close)

	cfg := newTestConfig(t, ca, up.Addr())
	rt := filepath.Join(t.TempDir(), "refresh-token")
	if err := os.WriteFile(rt, []byte(refreshToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Upstream.PasswordFile = ""
	cfg.Upstream.Auth = "xoauth2"
	cfg.Upstream.OAuth2 = OAuth2Config{TokenURL: tokenSrv.URL + "/token", ClientID: "client-id", RefreshTokenFile: rt, Scopes: []string{"https://mail.google.com/"}}
	revalidate(t, cfg)
	env := startRelay(t, cfg, nil)

	if _, err := send(t, env.addr, "app@example.com", []string{"a@example.org"}, "From: app@example.com\r\nTo: a@example.org\r\nSubject: x\r\n\r\nhi\r\n"); err != nil {
		t.Fatal(err)
	}
	rec := env.logs.waitRecord(t, "deferred", 1)[0]
	if e, _ := rec["error"].(string); !strings.Contains(e, "invalid_grant") {
		t.Errorf("deferred record error = %q, want the endpoint's invalid_grant", e)
	}
	logs := env.logs.String()
	if !strings.Contains(logs, "could not obtain an access token") || !strings.Contains(logs, "oauth2 login") {
		t.Errorf("no clear log line about the refresh token:\n%s", logs)
	}
	if strings.Contains(logs, refreshToken) {
		t.Errorf("the refresh token appears in the log")
	}
	if q, err := env.relay.Spool().List(); err != nil || len(q) != 1 {
		t.Fatalf("queue = %d messages, %v; want the message kept", len(q), err)
	}

	mu.Lock()
	revoked = false // the operator ran `sealpost oauth2 login`
	mu.Unlock()
	env.relay.routes.retryNow()
	env.relay.Spool().Flush()
	msg := up.Expect(t, 1)[0]
	if msg.AuthMechanism != "XOAUTH2" || msg.AuthUser != testUser {
		t.Errorf("AUTH %s as %s", msg.AuthMechanism, msg.AuthUser)
	}
	if strings.Contains(env.logs.String(), "ya29.access-token") {
		t.Errorf("an access token appears in the log")
	}
}
