package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// OAuth2 flows.
const (
	// FlowRefreshToken exchanges a long-lived refresh token (obtained once
	// with `sealpost oauth2 login`) for access tokens: delegated access to
	// one mailbox (Gmail, Microsoft 365 with a user's consent).
	FlowRefreshToken = "refresh_token"
	// FlowClientCredentials authenticates the application itself (Microsoft
	// 365 app-only SMTP): no user, no refresh token, only a client secret.
	FlowClientCredentials = "client_credentials"
)

// OAuth2Config says how to obtain access tokens for XOAUTH2/OAUTHBEARER.
type OAuth2Config struct {
	Flow     string // FlowRefreshToken (default) or FlowClientCredentials
	TokenURL string
	ClientID string
	// ClientSecret is optional for the refresh-token flow (public clients
	// such as a device-code registration have none) and required for the
	// client-credentials flow.
	ClientSecret *SecretSource
	// RefreshToken is required for the refresh-token flow. When it is a
	// file and the provider hands out a new refresh token (Microsoft
	// replaces it at every use), the new one is written back to the file so
	// that a restart does not fall back to an older, possibly expired one.
	RefreshToken *SecretSource
	Scopes       []string

	// RefreshBefore is how long before expiry a cached token is replaced;
	// default 5m, so a token never expires between the check and the end of
	// a slow AUTH exchange.
	RefreshBefore time.Duration
	// HTTPClient talks to the token endpoint; default a client with a 30s
	// timeout.
	HTTPClient *http.Client
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Log receives token refreshes and failures; never a token. Default
	// discards.
	Log *slog.Logger
}

// ErrTokenEndpoint wraps failures to obtain an access token.
var ErrTokenEndpoint = errors.New("OAuth2 token endpoint")

// OAuth2Tokens caches the access token in memory and refreshes it before
// it expires. It is safe for concurrent use; concurrent callers share one
// refresh.
type OAuth2Tokens struct {
	cfg OAuth2Config

	mu      sync.Mutex
	access  string
	expiry  time.Time // zero: unknown, use until refused
	refresh string    // the newest refresh token seen (rotation)
}

// NewOAuth2Tokens validates cfg.
func NewOAuth2Tokens(cfg OAuth2Config) (*OAuth2Tokens, error) {
	switch cfg.Flow {
	case "":
		cfg.Flow = FlowRefreshToken
	case FlowRefreshToken, FlowClientCredentials:
	default:
		return nil, fmt.Errorf("oauth2 flow %q: use %q or %q", cfg.Flow, FlowRefreshToken, FlowClientCredentials)
	}
	if cfg.TokenURL == "" || cfg.ClientID == "" {
		return nil, errors.New("oauth2: token_url and client_id are required")
	}
	if cfg.Flow == FlowRefreshToken && cfg.RefreshToken == nil {
		return nil, errors.New("oauth2: the refresh_token flow needs a refresh token source")
	}
	if cfg.Flow == FlowClientCredentials && cfg.ClientSecret == nil {
		return nil, errors.New("oauth2: the client_credentials flow needs a client secret source")
	}
	if cfg.RefreshBefore <= 0 {
		cfg.RefreshBefore = 5 * time.Minute
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &OAuth2Tokens{cfg: cfg}, nil
}

// Secret returns a valid access token, fetching a new one when none is
// cached or the cached one expires within RefreshBefore. It has the
// signature of Config.Secret.
func (t *OAuth2Tokens) Secret(ctx context.Context) (Secret, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.cfg.Now()
	if t.access != "" && (t.expiry.IsZero() || now.Add(t.cfg.RefreshBefore).Before(t.expiry)) {
		return NewSecret(t.access), nil
	}
	if err := t.fetch(ctx); err != nil {
		return Secret{}, err
	}
	return NewSecret(t.access), nil
}

// Refused drops tok from the cache after the server refused it, so the
// next Secret fetches a fresh one. A token already replaced by another
// caller's refresh is left alone.
func (t *OAuth2Tokens) Refused(tok Secret) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.access == tok.Reveal() {
		t.access, t.expiry = "", time.Time{}
	}
}

// fetch runs the flow; t.mu is held.
func (t *OAuth2Tokens) fetch(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, t.cfg.HTTPClient)

	var secret string
	if t.cfg.ClientSecret != nil {
		s, err := t.cfg.ClientSecret.Load(ctx)
		if err != nil {
			return fmt.Errorf("oauth2 client secret: %w", err)
		}
		secret = s.Reveal()
	}
	endpoint := oauth2.Endpoint{TokenURL: t.cfg.TokenURL}
	var (
		tok *oauth2.Token
		err error
	)
	switch t.cfg.Flow {
	case FlowClientCredentials:
		cc := clientcredentials.Config{ClientID: t.cfg.ClientID, ClientSecret: secret, TokenURL: t.cfg.TokenURL, Scopes: t.cfg.Scopes, AuthStyle: endpoint.AuthStyle}
		tok, err = cc.Token(ctx)
	default:
		rt := t.refresh
		if rt == "" {
			s, lerr := t.cfg.RefreshToken.Load(ctx)
			if lerr != nil {
				return fmt.Errorf("oauth2 refresh token: %w", lerr)
			}
			rt = s.Reveal()
		}
		oc := oauth2.Config{ClientID: t.cfg.ClientID, ClientSecret: secret, Endpoint: endpoint, Scopes: t.cfg.Scopes}
		// An empty access token makes the source refresh at once; the
		// caching and its clock are ours, not the library's.
		tok, err = oc.TokenSource(ctx, &oauth2.Token{RefreshToken: rt}).Token()
		if err == nil && tok.RefreshToken != "" && tok.RefreshToken != rt {
			t.refresh = tok.RefreshToken
			t.saveRefreshToken(tok.RefreshToken)
		} else if err == nil && t.refresh == "" {
			t.refresh = rt
		}
	}
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.ErrorCode == "invalid_grant" {
			// Read the source again next time: the operator may have put a
			// new refresh token there (`sealpost oauth2 login`).
			t.refresh = ""
		}
		err = tokenError(err)
		t.cfg.Log.Error("oauth2: could not obtain an access token; mail stays queued and is retried",
			slog.String("token_url", t.cfg.TokenURL), slog.String("flow", t.cfg.Flow), slog.String("error", err.Error()))
		return err
	}
	if tok.AccessToken == "" {
		return fmt.Errorf("%w: the reply holds no access token", ErrTokenEndpoint)
	}
	t.access = tok.AccessToken
	t.expiry = time.Time{}
	if expiresIn := tok.ExpiresIn; expiresIn > 0 {
		// ExpiresIn is relative to the response; measured against our
		// clock rather than the library's.
		t.expiry = t.cfg.Now().Add(time.Duration(expiresIn) * time.Second)
	} else if !tok.Expiry.IsZero() {
		t.expiry = tok.Expiry
	}
	t.cfg.Log.Info("oauth2: access token obtained", slog.String("token_url", t.cfg.TokenURL), slog.Time("expires", t.expiry))
	return nil
}

// tokenError keeps what the endpoint said about the failure (error code
// and description, which name the problem, e.g. invalid_grant for a
// revoked or expired refresh token) and drops the raw body.
func tokenError(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		msg := fmt.Sprintf("%v: HTTP %d", ErrTokenEndpoint, status)
		if re.ErrorCode != "" {
			msg += " " + re.ErrorCode
		}
		if re.ErrorDescription != "" {
			msg += ": " + re.ErrorDescription
		}
		if re.ErrorCode == "invalid_grant" {
			msg += " (the refresh token no longer works: run `sealpost oauth2 login` to obtain a new one)"
		}
		return &scrubbedError{msg: msg, err: ErrTokenEndpoint}
	}
	return fmt.Errorf("%w: %v", ErrTokenEndpoint, err)
}

// saveRefreshToken writes a rotated refresh token back to its file
// (atomically, mode 0600). Other sources cannot be written; the new token
// is kept in memory only and the log says so.
func (t *OAuth2Tokens) saveRefreshToken(rt string) {
	src := t.cfg.RefreshToken
	if src == nil || src.File == "" {
		t.cfg.Log.Warn("oauth2: the provider issued a new refresh token; it is used from memory only, since the configured source cannot be written (use refresh_token_file to keep it across restarts)")
		return
	}
	if err := WriteSecretFile(src.File, rt); err != nil {
		t.cfg.Log.Warn("oauth2: could not save the new refresh token; it is used from memory", slog.String("file", src.File), slog.String("error", err.Error()))
		return
	}
	t.cfg.Log.Info("oauth2: saved the new refresh token issued by the provider", slog.String("file", src.File))
}

// WriteSecretFile replaces path with value and a newline, mode 0600,
// atomically (temporary file, fsync, rename, fsync of the directory).
func WriteSecretFile(path, value string) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".sealpost-secret-*")
	if err != nil {
		return fmt.Errorf("write secret file: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return fmt.Errorf("write secret file: %w", err)
	}
	if _, err = f.WriteString(value + "\n"); err != nil {
		return fmt.Errorf("write secret file: %w", err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write secret file: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write secret file: %w", err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write secret file: %w", err)
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
