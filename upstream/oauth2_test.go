package upstream_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"sealpost/internal/fakeclock"

	"sealpost/upstream"
	"sealpost/upstream/upstreamtest"
)

// tokenEndpoint is a fake OAuth2 token endpoint: each grant hands out the
// next access token, valid for expiresIn seconds, and tells the test
// upstream about it.
type tokenEndpoint struct {
	t   *testing.T
	srv *httptest.Server

	mu        sync.Mutex
	n         int
	grants    []string // grant_type of each request
	refresh   string   // refresh token accepted; "" refuses all (invalid_grant)
	rotate    bool     // hand out a new refresh token each time
	expiresIn int
	issued    func(token string)
}

func newTokenEndpoint(t *testing.T, refresh string, issued func(string)) *tokenEndpoint {
	te := &tokenEndpoint{t: t, refresh: refresh, expiresIn: 3600, issued: issued}
	te.srv = httptest.NewServer(http.HandlerFunc(te.serve))
	t.Cleanup(te.srv.Close)
	return te
}

func (te *tokenEndpoint) serve(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	te.mu.Lock()
	defer te.mu.Unlock()
	grant := r.PostForm.Get("grant_type")
	te.grants = append(te.grants, grant)
	w.Header().Set("Content-Type", "application/json")
	if grant == "refresh_token" && (te.refresh == "" || r.PostForm.Get("refresh_token") != te.refresh) {
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
		return
	}
	te.n++
	tok := "access-" + strings.Repeat("x", te.n) // distinct per grant
	resp := map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": te.expiresIn}
	if te.rotate {
		te.refresh = "refresh-" + tok
		resp["refresh_token"] = te.refresh
	}
	if te.issued != nil {
		te.issued(tok)
	}
	json.NewEncoder(w).Encode(resp)
}

func (te *tokenEndpoint) count() int {
	te.mu.Lock()
	defer te.mu.Unlock()
	return len(te.grants)
}

func writeSecret(t *testing.T, name, v string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// oauthSetup is an upstream accepting only the latest token the endpoint
// issued, and a client using OAuth2Tokens against that endpoint.
func oauthSetup(t *testing.T, mech upstream.Mechanism, refresh string) (*upstreamtest.Server, *tokenEndpoint, *upstream.OAuth2Tokens, *upstream.Client, *fakeclock.Clock, *bytes.Buffer) {
	t.Helper()
	f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Tokens: map[string]string{user: "none-yet"}})
	te := newTokenEndpoint(t, refresh, func(tok string) { f.srv.SetToken(user, tok) })
	clock := fakeclock.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	var logBuf bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: &logBuf, mu: &logMu}, nil))
	tokens, err := upstream.NewOAuth2Tokens(upstream.OAuth2Config{
		TokenURL:     te.srv.URL,
		ClientID:     "client-1",
		ClientSecret: &upstream.SecretSource{File: writeSecret(t, "cs", "client-secret-77")},
		RefreshToken: &upstream.SecretSource{File: writeSecret(t, "rt", refresh)},
		Scopes:       []string{"https://mail.google.com/"},
		Now:          clock.Now,
		Log:          logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := f.config(t, upstream.ModeStartTLS)
	cfg.Username, cfg.Auth = user, mech
	cfg.Secret, cfg.TokenRefused = tokens.Secret, tokens.Refused
	return f.srv, te, tokens, newClient(t, cfg), clock, &logBuf
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestOAuth2CachesAndRefreshesBeforeExpiry(t *testing.T) {
	t.Parallel()
	for _, mech := range []upstream.Mechanism{upstream.MechanismXOAUTH2, upstream.MechanismOAuthBearer} {
		t.Run(string(mech), func(t *testing.T) {
			t.Parallel()
			srv, te, _, c, clock, _ := oauthSetup(t, mech, "refresh-1")
			for range 2 {
				if _, _, err := deliver(t, c, "a@example.org"); err != nil {
					t.Fatal(err)
				}
			}
			if n := te.count(); n != 1 {
				t.Fatalf("token requests after two deliveries within the lifetime = %d, want 1 (cached)", n)
			}
			// 56 minutes on, the hour-long token is within the 5 minutes
			// before expiry: it is replaced before it is used.
			clock.Advance(56 * time.Minute)
			if _, _, err := deliver(t, c, "a@example.org"); err != nil {
				t.Fatal(err)
			}
			if n := te.count(); n != 2 {
				t.Fatalf("token requests = %d, want 2 (refreshed before expiry)", n)
			}
			msgs := srv.Expect(t, 3)
			if got := msgs[2].AuthMechanism; got != strings.ToUpper(string(mech)) {
				t.Errorf("AUTH mechanism = %q, want %q", got, strings.ToUpper(string(mech)))
			}
		})
	}
}

func TestOAuth2RefusedTokenIsRefreshedOnce(t *testing.T) {
	t.Parallel()
	srv, te, _, c, _, _ := oauthSetup(t, upstream.MechanismXOAUTH2, "refresh-1")
	if _, _, err := deliver(t, c, "a@example.org"); err != nil {
		t.Fatal(err)
	}
	// The server revokes the token early (password change, admin action).
	srv.SetToken(user, "revoked-and-replaced-elsewhere")
	// The next grant makes the server accept the new token again.
	if _, _, err := deliver(t, c, "a@example.org"); err != nil {
		t.Fatalf("delivery after a refused token: %v", err)
	}
	if n := te.count(); n != 2 {
		t.Fatalf("token requests = %d, want 2 (one refresh after the refusal)", n)
	}
	srv.Expect(t, 2)
}

func TestOAuth2RefusedTwiceIsTemporary(t *testing.T) {
	t.Parallel()
	f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Tokens: map[string]string{user: "never-issued"}})
	te := newTokenEndpoint(t, "refresh-1", nil) // the server never learns its tokens
	tokens, err := upstream.NewOAuth2Tokens(upstream.OAuth2Config{
		TokenURL: te.srv.URL, ClientID: "client-1",
		RefreshToken: &upstream.SecretSource{File: writeSecret(t, "rt", "refresh-1")},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := f.config(t, upstream.ModeStartTLS)
	cfg.Username, cfg.Auth = user, upstream.MechanismXOAUTH2
	cfg.Secret, cfg.TokenRefused = tokens.Secret, tokens.Refused
	_, _, err = deliver(t, newClient(t, cfg), "a@example.org")
	if err == nil || !upstream.IsTemporary(err) || !errors.Is(err, upstream.ErrAuthRejected) {
		t.Fatalf("err = %v; want a temporary ErrAuthRejected", err)
	}
	if !strings.Contains(err.Error(), "freshly obtained access token was refused too") {
		t.Errorf("error does not say the refresh did not help: %v", err)
	}
	if n := te.count(); n != 2 {
		t.Errorf("token requests = %d, want 2 (exactly one retry)", n)
	}
	if strings.Contains(err.Error(), "access-x") {
		t.Errorf("error contains a token: %v", err)
	}
}

func TestOAuth2DeadRefreshTokenIsTemporaryAndLogged(t *testing.T) {
	t.Parallel()
	srv, te, _, c, _, logBuf := oauthSetup(t, upstream.MechanismXOAUTH2, "refresh-1")
	te.mu.Lock()
	te.refresh = "" // revoked by the user
	te.mu.Unlock()
	_, _, err := deliver(t, c, "a@example.org")
	if err == nil || !upstream.IsTemporary(err) || !errors.Is(err, upstream.ErrTokenEndpoint) {
		t.Fatalf("err = %v; want a temporary ErrTokenEndpoint", err)
	}
	for _, want := range []string{"invalid_grant", "oauth2 login"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if log := logBuf.String(); !strings.Contains(log, "could not obtain an access token") || strings.Contains(log, "refresh-1") || strings.Contains(log, "client-secret-77") {
		t.Errorf("log line missing or leaking a secret:\n%s", log)
	}
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("%d messages delivered", n)
	}
	for _, cmd := range srv.Commands() {
		if cmd.Verb == "AUTH" || cmd.Verb == "MAIL" {
			t.Errorf("%s sent although no token could be obtained", cmd.Verb)
		}
	}
}

func TestOAuth2RotatedRefreshTokenIsSaved(t *testing.T) {
	t.Parallel()
	f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Tokens: map[string]string{user: "x"}})
	te := newTokenEndpoint(t, "refresh-1", func(tok string) { f.srv.SetToken(user, tok) })
	te.rotate = true
	rtFile := writeSecret(t, "rt", "refresh-1")
	clock := fakeclock.New(time.Unix(1e9, 0))
	tokens, err := upstream.NewOAuth2Tokens(upstream.OAuth2Config{
		TokenURL: te.srv.URL, ClientID: "c", Now: clock.Now,
		RefreshToken: &upstream.SecretSource{File: rtFile},
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := tokens.Secret(context.Background()); err != nil {
			t.Fatal(err)
		}
		clock.Advance(2 * time.Hour)
	}
	data, err := os.ReadFile(rtFile)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(data)); got != "refresh-access-xx" {
		t.Errorf("refresh token file = %q, want the newest rotated token", got)
	}
	if fi, _ := os.Stat(rtFile); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestOAuth2ClientCredentials(t *testing.T) {
	t.Parallel()
	f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Tokens: map[string]string{user: "x"}})
	te := newTokenEndpoint(t, "", func(tok string) { f.srv.SetToken(user, tok) })
	tokens, err := upstream.NewOAuth2Tokens(upstream.OAuth2Config{
		Flow: upstream.FlowClientCredentials, TokenURL: te.srv.URL, ClientID: "app",
		ClientSecret: &upstream.SecretSource{File: writeSecret(t, "cs", "s3cret")},
		Scopes:       []string{"https://outlook.office365.com/.default"},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := f.config(t, upstream.ModeStartTLS)
	cfg.Username, cfg.Auth = user, upstream.MechanismXOAUTH2
	cfg.Secret, cfg.TokenRefused = tokens.Secret, tokens.Refused
	if _, _, err := deliver(t, newClient(t, cfg), "a@example.org"); err != nil {
		t.Fatal(err)
	}
	te.mu.Lock()
	defer te.mu.Unlock()
	if len(te.grants) != 1 || te.grants[0] != "client_credentials" {
		t.Errorf("grants = %v", te.grants)
	}
}
