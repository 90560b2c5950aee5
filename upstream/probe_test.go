package upstream_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"sealpost/certs/certstest"
	"sealpost/upstream"
	"sealpost/upstream/upstreamtest"
)

func TestProbe(t *testing.T) {
	t.Parallel()
	f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Users: map[string]string{user: password}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := newClient(t, f.config(t, upstream.ModeStartTLS)).Probe(ctx)
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	if !res.StartTLS || !res.Verified || !res.Authenticated || res.AuthMechanism != "PLAIN" || res.TLSVersion == "" || res.CipherSuite == "" || res.Leaf == nil {
		t.Errorf("result %+v", res)
	}
	assertNothingSensitiveInClear(t, f.srv)
	for _, c := range f.srv.Commands() {
		if c.Verb == "MAIL" {
			t.Error("Probe sent MAIL")
		}
	}
}

func TestProbeExpiredCertificate(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	now := time.Now()
	cert, err := ca.IssueValidity(now.Add(-48*time.Hour), now.Add(-time.Hour), serverName)
	if err != nil {
		t.Fatal(err)
	}
	f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Certificate: cert, Users: map[string]string{user: password}})
	f.ca = ca
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := newClient(t, f.config(t, upstream.ModeStartTLS)).Probe(ctx)
	if tlsErr := asTLSError(t, err); tlsErr.Check != upstream.CheckExpired {
		t.Errorf("check %s, want %s", tlsErr.Check, upstream.CheckExpired)
	}
	// The rejected certificate is still reported, so check can say when
	// it expired.
	if res.Leaf == nil || !res.Leaf.NotAfter.Before(now) || res.Verified || res.Authenticated {
		t.Errorf("result %+v", res)
	}
	assertNoAuthNoMail(t, f.srv)
}

func TestProbeSecretFails(t *testing.T) {
	t.Parallel()
	f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Users: map[string]string{user: password}})
	cfg := f.config(t, upstream.ModeStartTLS)
	cfg.Secret = func(context.Context) (upstream.Secret, error) { return upstream.Secret{}, errors.New("no such file") }
	_, err := newClient(t, cfg).Probe(context.Background())
	if e := asError(t, err); e.Op != "auth" {
		t.Errorf("op %q, want auth", e.Op)
	}
	if n := len(f.srv.Commands()); n != 0 {
		t.Errorf("Probe dialled although the secret did not load (%d commands)", n)
	}
}
