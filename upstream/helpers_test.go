package upstream_test

import (
	"context"
	"crypto/tls"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"sealpost/certs"
	"sealpost/certs/certstest"
	"sealpost/upstream"
	"sealpost/upstream/upstreamtest"
)

const (
	serverName = "upstream.test"
	user       = "relay@example.com"
	password   = "correct-horse-battery-staple-7361"
	token      = "ya29.a0AfH6SMBx-oauth-token-5521"
)

// testMessage uses CRLF line endings and a leading dot, which must survive
// dot-stuffing intact.
const testMessage = "From: app@example.com\r\nTo: a@example.org\r\nSubject: hi\r\n\r\nline one\r\n.leading dot\r\nMAIL FROM:<not-a-command@example.com>\r\n"

type fixture struct {
	ca  *certs.CA
	srv *upstreamtest.Server
}

// newUpstream starts a server whose certificate, unless opts sets one, is
// issued by a fresh CA for serverName.
func newUpstream(t *testing.T, opts upstreamtest.Options) fixture {
	t.Helper()
	ca := certstest.NewCA(t)
	if opts.TLS != upstreamtest.TLSNone && len(opts.Certificate.Certificate) == 0 {
		opts.Certificate = certstest.Leaf(t, ca, serverName, "127.0.0.1")
	}
	return fixture{ca: ca, srv: upstreamtest.New(t, opts)}
}

func staticSecret(s string) func(context.Context) (upstream.Secret, error) {
	return func(context.Context) (upstream.Secret, error) { return upstream.NewSecret(s), nil }
}

// config returns a client config trusting the fixture's CA; mode follows
// the server's.
func (f fixture) config(t *testing.T, mode string) upstream.Config {
	t.Helper()
	tlsConfig, err := certs.ClientConfig(certs.ClientOptions{ServerName: serverName, ExtraRoots: f.ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	return upstream.Config{
		Addr:           f.srv.Addr(),
		TLSMode:        mode,
		TLS:            tlsConfig,
		Hostname:       "app01.example.com",
		Username:       user,
		Secret:         staticSecret(password),
		CommandTimeout: 10 * time.Second,
		DialTimeout:    5 * time.Second,
	}
}

func newClient(t *testing.T, cfg upstream.Config) *upstream.Client {
	t.Helper()
	c, err := upstream.NewClient(cfg)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

func deliver(t *testing.T, c *upstream.Client, to ...string) ([]error, upstream.DeliveryInfo, error) {
	t.Helper()
	if len(to) == 0 {
		to = []string{"a@example.org"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return c.Deliver(ctx, upstream.Message{From: "app@example.com", To: to, Size: int64(len(testMessage))}, strings.NewReader(testMessage))
}

// assertNothingSensitiveInClear fails if AUTH, MAIL, RCPT or DATA reached
// the server without TLS.
func assertNothingSensitiveInClear(t *testing.T, srv *upstreamtest.Server) {
	t.Helper()
	for _, c := range srv.Commands() {
		if !c.TLS && slices.Contains([]string{"AUTH", "MAIL", "RCPT", "DATA", "BDAT"}, c.Verb) {
			t.Errorf("server saw %s %s before TLS", c.Verb, c.Arg)
		}
	}
}

// assertNoAuthNoMail fails if AUTH or MAIL reached the server at all.
func assertNoAuthNoMail(t *testing.T, srv *upstreamtest.Server) {
	t.Helper()
	for _, c := range srv.Commands() {
		if c.Verb == "AUTH" || c.Verb == "MAIL" {
			t.Errorf("server saw %s (TLS %v); want none", c.Verb, c.TLS)
		}
	}
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("server received %d messages, want 0", n)
	}
}

func asTLSError(t *testing.T, err error) *upstream.TLSError {
	t.Helper()
	var tlsErr *upstream.TLSError
	if !errors.As(err, &tlsErr) {
		t.Fatalf("error %v (%T) is not a TLSError", err, err)
	}
	return tlsErr
}

func asError(t *testing.T, err error) *upstream.Error {
	t.Helper()
	var e *upstream.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *upstream.Error", err, err)
	}
	return e
}

func tlsAtLeast12(v uint16) bool { return v >= tls.VersionTLS12 }
