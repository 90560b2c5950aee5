package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// TLS modes. There is deliberately no plaintext mode.
const (
	ModeStartTLS = "starttls" // port 587: EHLO, STARTTLS (required), verify
	ModeImplicit = "implicit" // port 465: TLS from the first byte
)

// Mechanism names a SASL mechanism.
type Mechanism string

// Supported mechanisms. The empty Mechanism picks PLAIN if the upstream
// offers it, else LOGIN.
const (
	MechanismAuto    Mechanism = ""
	MechanismPlain   Mechanism = "plain"
	MechanismLogin   Mechanism = "login"
	MechanismXOAUTH2 Mechanism = "xoauth2"
	// MechanismOAuthBearer is RFC 7628's standard form of XOAUTH2.
	MechanismOAuthBearer Mechanism = "oauthbearer"
)

// Defaults for Config's zero values.
const (
	DefaultDialTimeout = 30 * time.Second
	// RFC 5321 section 4.5.3.2 recommends at least 5 minutes per command.
	DefaultCommandTimeout = 5 * time.Minute
)

// Config describes one upstream. The zero values of the optional fields
// are safe defaults.
type Config struct {
	// Addr is host:port.
	Addr string
	// TLSMode is ModeStartTLS (the default when empty) or ModeImplicit.
	TLSMode string
	// TLS must come from certs.ClientConfig or be equally strict:
	// ServerName set, InsecureSkipVerify off, MinVersion zero (meaning TLS
	// 1.2) or at least TLS 1.2. NewClient refuses anything weaker.
	TLS *tls.Config
	// Hostname is our EHLO name; default "localhost".
	Hostname string
	// Username for AUTH; empty means no AUTH (and then Secret must be nil).
	Username string
	// Auth picks the SASL mechanism; see Mechanism.
	Auth Mechanism
	// Secret returns the password, or the access token for XOAUTH2. It is
	// called once per Deliver so rotated secrets and refreshed tokens are
	// used without a restart. Nil means no AUTH.
	Secret func(ctx context.Context) (Secret, error)
	// TokenRefused, when set (OAuth2 token sources), is told of an access
	// token the server refused; the connection is then retried once with
	// the token Secret returns next.
	TokenRefused func(Secret)
	// DialTimeout bounds the TCP connect; default 30s.
	DialTimeout time.Duration
	// CommandTimeout bounds each command's reply and the TLS handshake;
	// default 5m. The reply to the final dot of DATA gets twice as long,
	// since the upstream may scan the message first.
	CommandTimeout time.Duration
	// Dial replaces the default net.Dialer, e.g. to bind a source address.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Message is the envelope of one delivery.
type Message struct {
	From     string
	To       []string
	SMTPUTF8 bool
	// Size in bytes if known (0 = unknown); sent as SIZE= so an upstream
	// can refuse an oversized message before the body is sent.
	Size int64
}

// DeliveryInfo describes a delivery attempt for the log. It is filled as
// far as the attempt got, also when Deliver returns an error.
type DeliveryInfo struct {
	TLSVersion  string // e.g. "TLS1.3"
	CipherSuite string
	Reply       string // the upstream's reply to the final dot (often holds its queue id)
	Duration    time.Duration
}

// Client delivers messages to one upstream. It holds no connection between
// calls and is safe for concurrent use.
type Client struct {
	cfg        Config
	tls        *tls.Config
	minVersion uint16
	host       string
}

// NewClient validates cfg and fills in defaults.
func NewClient(cfg Config) (*Client, error) {
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("upstream address %q: %w", cfg.Addr, err)
	}
	switch cfg.TLSMode {
	case "":
		cfg.TLSMode = ModeStartTLS
	case ModeStartTLS, ModeImplicit:
	default:
		return nil, fmt.Errorf("upstream tls mode %q: must be %q or %q (there is no plaintext mode)", cfg.TLSMode, ModeStartTLS, ModeImplicit)
	}
	if cfg.TLS == nil {
		return nil, errors.New("upstream: a TLS configuration is required")
	}
	if cfg.TLS.InsecureSkipVerify {
		return nil, errors.New("upstream: TLS configuration has InsecureSkipVerify set; certificate verification cannot be turned off")
	}
	if cfg.TLS.ServerName == "" {
		return nil, errors.New("upstream: TLS configuration has no ServerName to verify the certificate against")
	}
	tlsConfig := cfg.TLS.Clone()
	switch v := tlsConfig.MinVersion; {
	case v == 0:
		tlsConfig.MinVersion = tls.VersionTLS12
	case v < tls.VersionTLS12:
		return nil, fmt.Errorf("upstream: minimum TLS version %s is refused; TLS below 1.2 is not allowed", tls.VersionName(v))
	}

	if cfg.Hostname == "" {
		cfg.Hostname = "localhost"
	}
	if strings.ContainsAny(cfg.Hostname, " \t\r\n") {
		return nil, fmt.Errorf("upstream: EHLO hostname %q contains white space", cfg.Hostname)
	}
	switch {
	case cfg.Username != "" && cfg.Secret == nil:
		return nil, fmt.Errorf("upstream: username %s is set but no password source", cfg.Username)
	case cfg.Username == "" && cfg.Secret != nil:
		return nil, errors.New("upstream: a password source is set but no username")
	case strings.ContainsAny(cfg.Username, "\r\n\x00"):
		return nil, errors.New("upstream: username contains a control character")
	}
	cfg.Auth = Mechanism(strings.ToLower(string(cfg.Auth)))
	switch cfg.Auth {
	case MechanismAuto, MechanismPlain, MechanismLogin, MechanismXOAUTH2, MechanismOAuthBearer:
	default:
		return nil, fmt.Errorf("upstream: unknown auth mechanism %q: use plain, login, xoauth2 or oauthbearer", cfg.Auth)
	}

	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.CommandTimeout <= 0 {
		cfg.CommandTimeout = DefaultCommandTimeout
	}
	if cfg.Dial == nil {
		var d net.Dialer
		cfg.Dial = d.DialContext
	}
	return &Client{cfg: cfg, tls: tlsConfig, minVersion: tlsConfig.MinVersion, host: host}, nil
}

// Deliver opens a connection, verifies TLS, authenticates, sends one
// message and quits.
//
// perRcpt has one entry per msg.To (nil = accepted). err is for the whole
// attempt: when it is non-nil nothing was delivered. The two combine so:
// a non-nil perRcpt[i] is the authoritative fate of recipient i; every
// other recipient shares err's fate. Every error is an *Error; use its
// Temporary method (or IsTemporary) to choose between retry and bounce.
func (c *Client) Deliver(ctx context.Context, msg Message, body io.Reader) (perRcpt []error, info DeliveryInfo, err error) {
	start := time.Now()
	defer func() { info.Duration = time.Since(start) }()

	if len(msg.To) == 0 {
		return nil, info, &Error{Op: "rcpt", Err: errors.New("message has no recipients")}
	}
	// The secret is loaded before dialling so a broken secret source does
	// not hold a connection to the upstream open.
	s, err := c.openWithSecret(ctx)
	if s != nil {
		defer s.close()
		info.TLSVersion, info.CipherSuite = s.tlsInfo()
	}
	if err != nil {
		return nil, info, err
	}
	perRcpt, info.Reply, err = s.send(ctx, msg, body)
	if err != nil {
		return perRcpt, info, err
	}
	// The message is delivered once the final dot is acknowledged; a failed
	// QUIT changes nothing about that.
	s.quit()
	return perRcpt, info, nil
}
