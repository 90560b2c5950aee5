package relay

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"sealpost/upstream"
)

// certWarnDays: a certificate closer than this to expiry gets a WARN. Public
// CAs renew at 30 days left; under 21 the renewal has likely failed.
const certWarnDays = 21

// checkLive connects to the upstream as a delivery would, logs in with the
// stored secret and quits without sending mail.
func (c *checker) checkLive(ctx context.Context) {
	addr := c.cfg.Upstream.Addr
	cfg := *c.cfg
	// The probe has its own budget: a check must not hang for the minutes
	// a delivery may wait.
	cfg.Upstream.DialTimeout = Duration(c.opts.Timeout)
	cfg.Upstream.CommandTimeout = Duration(c.opts.Timeout)
	client, err := c.newProbeClient(&cfg)
	if err != nil {
		c.fail("live.connect", addr, "cannot set up the upstream client: "+err.Error(), "fix what the offline checks above report")
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 4*c.opts.Timeout)
	defer cancel()
	res, err := client.Probe(ctx)

	var uerr *upstream.Error
	errors.As(err, &uerr)
	op := ""
	if uerr != nil {
		op = uerr.Op
	}
	var tlsErr *upstream.TLSError
	errors.As(err, &tlsErr)

	// Connection and STARTTLS.
	switch {
	case err != nil && op == "auth" && res.TLSVersion == "":
		// The secret did not load, so Probe did not even dial.
		c.fail("live.auth", addr, err.Error(), "fix the password source (see secrets.source)")
		return
	case err != nil && (op == "dial" || op == "greeting" || op == "ehlo" && res.TLSVersion == "" && !res.StartTLS):
		c.fail("live.connect", addr, err.Error(), "check upstream.addr and that this host may connect to it (firewall, provider's IP allow list)")
		return
	case tlsErr != nil && strings.HasPrefix(tlsErr.Check, "starttls"):
		c.fail("live.connect", addr, err.Error(), "use the provider's submission port with STARTTLS (587) or tls = \"implicit\" on 465; sealpost never sends in clear")
		return
	case c.cfg.Upstream.TLS == "starttls":
		c.pass("live.connect", addr, "connected; STARTTLS offered and accepted")
	default:
		c.pass("live.connect", addr, "connected with implicit TLS")
	}

	// TLS and certificate.
	now := c.opts.Now()
	if tlsErr != nil || op == "tls" {
		found := err.Error()
		if res.Leaf != nil {
			found += fmt.Sprintf(" (certificate for %s, issued by %q, valid until %s)", certNames(res), res.Leaf.Issuer.CommonName, res.Leaf.NotAfter.Format(time.DateOnly))
		}
		fix := "the upstream's certificate must be valid for " + res.ServerName + " and chain to a trusted root: fix upstream.server_name / ca_file, or ask the provider"
		if tlsErr != nil && tlsErr.Check == upstream.CheckExpired {
			fix = "the provider must renew its certificate; mail stays queued until then"
		}
		c.fail("live.tls", addr, found, fix)
		return
	}
	if res.TLSVersion == "" {
		c.fail("live.tls", addr, "no TLS connection: "+errString(err), "")
		return
	}
	c.pass("live.tls", addr, fmt.Sprintf("%s, %s, certificate verified for %s", res.TLSVersion, res.CipherSuite, res.ServerName))
	if res.Leaf != nil {
		days := int(res.Leaf.NotAfter.Sub(now).Hours() / 24)
		found := fmt.Sprintf("leaf certificate valid until %s (%d days)", res.Leaf.NotAfter.Format(time.DateOnly), days)
		if days < certWarnDays {
			c.warn("live.cert_expiry", addr, found+", fewer than "+fmt.Sprint(certWarnDays), "tell the provider their certificate renewal looks stuck; sealpost will stop delivering when it expires")
		} else {
			c.pass("live.cert_expiry", addr, found)
		}
	}

	// AUTH.
	switch {
	case c.cfg.Upstream.Username == "":
		c.warn("live.auth", addr, "no username configured: AUTH not tried", "set upstream.username and a password source")
	case err != nil:
		fix := "check the username and the secret (app password or token) with the provider"
		if errors.Is(err, upstream.ErrMechanismNotOffered) {
			fix = "set upstream.auth to a mechanism the upstream offers, or leave it empty"
		}
		c.fail("live.auth", addr, err.Error(), fix)
	default:
		c.pass("live.auth", addr, fmt.Sprintf("AUTH %s accepted for %s; QUIT sent, no mail", res.AuthMechanism, c.cfg.Upstream.Username))
	}
}

func certNames(res upstream.ProbeResult) string {
	if len(res.Leaf.DNSNames) > 0 {
		return strings.Join(res.Leaf.DNSNames, ", ")
	}
	return res.Leaf.Subject.CommonName
}

func errString(err error) string {
	if err == nil {
		return "no error reported"
	}
	return err.Error()
}

// newProbeClient builds the upstream client the probe uses; unlike the
// relay's clients it does not load the secret up front, so a broken secret
// shows as a live.auth finding rather than no probe at all.
func (c *checker) newProbeClient(cfg *Config) (*upstream.Client, error) {
	u := cfg.Upstream
	tlsConf, err := cfg.ClientTLS()
	if err != nil {
		return nil, fmt.Errorf("upstream TLS: %w", err)
	}
	var secret func(context.Context) (upstream.Secret, error)
	var refused func(upstream.Secret)
	if o := u.OAuth2; o.Set() {
		// The probe gets a real access token: that is what -live tests.
		tokens, err := upstream.NewOAuth2Tokens(upstream.OAuth2Config{Flow: o.Flow, TokenURL: o.TokenURL, ClientID: o.ClientID, Scopes: o.Scopes,
			ClientSecret: o.ClientSecret(), RefreshToken: o.RefreshToken()})
		if err != nil {
			return nil, err
		}
		secret, refused = tokens.Secret, tokens.Refused
	} else if u.Username != "" {
		src := upstream.SecretSource{File: u.PasswordFile, Env: u.PasswordEnv, Command: u.PasswordCommand, Credential: u.Credential,
			CommandTimeout: c.opts.Timeout, Getenv: c.opts.Getenv}
		secret = src.Load
	}
	return upstream.NewClient(clientConfig(cfg.Hostname, u, tlsConf, secret, refused))
}
