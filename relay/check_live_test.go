package relay

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"sealpost/certs"
	"sealpost/certs/certstest"
	"sealpost/upstream/upstreamtest"
)

func TestCheckLive(t *testing.T) {
	t.Parallel()
	const host = "upstream.test"
	now := time.Now()
	issue := func(t *testing.T, ca *certs.CA, from, until time.Time, hosts ...string) tls.Certificate {
		c, err := ca.IssueValidity(from, until, hosts...)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name     string
		tls      upstreamtest.TLSMode
		cert     func(t *testing.T, ca *certs.CA) tls.Certificate
		password string
		checks   map[string]Status
		contains string
	}{
		{name: "good", tls: upstreamtest.TLSStartTLS,
			checks: map[string]Status{"live.connect": StatusPass, "live.tls": StatusPass, "live.cert_expiry": StatusPass, "live.auth": StatusPass}, contains: "AUTH PLAIN accepted"},
		{name: "implicit", tls: upstreamtest.TLSImplicit,
			checks: map[string]Status{"live.connect": StatusPass, "live.tls": StatusPass, "live.auth": StatusPass}, contains: "implicit TLS"},
		{name: "expired", tls: upstreamtest.TLSStartTLS, cert: func(t *testing.T, ca *certs.CA) tls.Certificate {
			return issue(t, ca, now.Add(-90*24*time.Hour), now.Add(-24*time.Hour), host, "127.0.0.1")
		}, checks: map[string]Status{"live.connect": StatusPass, "live.tls": StatusFail}, contains: "certificate-expired"},
		{name: "expires soon", tls: upstreamtest.TLSStartTLS, cert: func(t *testing.T, ca *certs.CA) tls.Certificate {
			return issue(t, ca, now.Add(-80*24*time.Hour), now.Add(10*24*time.Hour+time.Hour), host)
		}, checks: map[string]Status{"live.tls": StatusPass, "live.cert_expiry": StatusWarn, "live.auth": StatusPass}, contains: "(10 days)"},
		{name: "wrong host", tls: upstreamtest.TLSStartTLS, cert: func(t *testing.T, ca *certs.CA) tls.Certificate {
			return certstest.Leaf(t, ca, "other.test")
		}, checks: map[string]Status{"live.tls": StatusFail}, contains: "certificate-hostname"},
		{name: "untrusted", tls: upstreamtest.TLSStartTLS, cert: func(t *testing.T, _ *certs.CA) tls.Certificate {
			return certstest.SelfSigned(t, host)
		}, checks: map[string]Status{"live.tls": StatusFail}, contains: "certificate-untrusted"},
		{name: "no starttls", tls: upstreamtest.TLSNone,
			checks: map[string]Status{"live.connect": StatusFail}, contains: "starttls-not-offered"},
		{name: "wrong password", tls: upstreamtest.TLSStartTLS, password: "not-the-password",
			checks: map[string]Status{"live.tls": StatusPass, "live.auth": StatusFail}, contains: "rejected the credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ca := certstest.NewCA(t)
			opts := upstreamtest.Options{TLS: tt.tls, Domain: host, Users: map[string]string{"relay@example.com": checkSecret}}
			if tt.tls != upstreamtest.TLSNone {
				opts.Certificate = certstest.Leaf(t, ca, host)
				if tt.cert != nil {
					opts.Certificate = tt.cert(t, ca)
				}
			}
			srv := upstreamtest.New(t, opts)

			f := newCheckFixture(t)
			f.upstream = srv.Addr()
			cfg := f.load(t)
			cfg.Upstream.ServerName = host
			cfg.Upstream.CAFile = certstest.WriteCAFile(t, ca)
			if tt.tls == upstreamtest.TLSImplicit {
				cfg.Upstream.TLS = "implicit"
			}
			if tt.password != "" {
				cfg.Upstream.PasswordFile = ""
				cfg.Upstream.PasswordEnv = "PW"
			}
			r := runCheck(t, cfg, CheckOptions{Live: true, Timeout: 5 * time.Second, Getenv: func(string) string { return tt.password }})
			for id, st := range tt.checks {
				want(t, r, id, st, "")
			}
			found := false
			for _, fd := range r.Findings {
				if strings.HasPrefix(fd.ID, "live.") && strings.Contains(fd.Found+" "+fd.Fix, tt.contains) {
					found = true
				}
			}
			if !found {
				t.Errorf("no live finding mentions %q: %+v", tt.contains, r.Findings)
			}
			// The probe never sends mail.
			for _, c := range srv.Commands() {
				if c.Verb == "MAIL" || c.Verb == "RCPT" || c.Verb == "DATA" {
					t.Errorf("probe sent %s", c.Verb)
				}
			}
			if n := len(srv.Messages()); n != 0 {
				t.Errorf("upstream received %d messages", n)
			}
		})
	}
}
