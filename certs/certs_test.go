package certs_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sealpost/certs"
	"sealpost/certs/certstest"
)

func TestParseTLSVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    uint16
		wantErr string
	}{
		{in: "1.2", want: tls.VersionTLS12},
		{in: "1.3", want: tls.VersionTLS13},
		{in: " 1.3 ", want: tls.VersionTLS13},
		{in: "1.0", wantErr: "below 1.2"},
		{in: "1.1", wantErr: "below 1.2"},
		{in: "", wantErr: "below 1.2"},
		{in: "TLS1.2", wantErr: "unknown"},
		{in: "1.4", wantErr: "unknown"},
		{in: "ssl3", wantErr: "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := certs.ParseTLSVersion(tt.in)
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("ParseTLSVersion(%q) = %#x, %v; want %#x", tt.in, got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseTLSVersion(%q) = %#x, want error", tt.in, got)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, certs.ErrTLSVersion) {
				t.Errorf("error %q: want it to mention %q and wrap ErrTLSVersion", err, tt.wantErr)
			}
		})
	}
}

func TestClientConfigValidation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	corrupt := filepath.Join(dir, "corrupt.pem")
	if err := os.WriteFile(corrupt, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")

	tests := []struct {
		name    string
		opts    certs.ClientOptions
		wantErr string
		is      error
	}{
		{name: "no server name", opts: certs.ClientOptions{}, is: certs.ErrNoServerName},
		{name: "TLS 1.1", opts: certs.ClientOptions{ServerName: "x", MinVersion: tls.VersionTLS11}, is: certs.ErrTLSVersion},
		{name: "TLS 1.0", opts: certs.ClientOptions{ServerName: "x", MinVersion: tls.VersionTLS10}, is: certs.ErrTLSVersion},
		{name: "missing CA file", opts: certs.ClientOptions{ServerName: "x", CAFile: missing}, wantErr: missing, is: os.ErrNotExist},
		{name: "no certificate in CA file", opts: certs.ClientOptions{ServerName: "x", CAFile: garbage}, wantErr: garbage, is: certs.ErrNoCertificate},
		{name: "corrupt certificate in CA file", opts: certs.ClientOptions{ServerName: "x", CAFile: corrupt}, wantErr: corrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := certs.ClientConfig(tt.opts)
			if err == nil {
				t.Fatalf("ClientConfig = %v, want error", cfg)
			}
			if tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not name %q", err, tt.wantErr)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q does not wrap %v", err, tt.is)
			}
		})
	}
}

func TestClientConfigDefaults(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	cfg, err := certs.ClientConfig(certs.ClientOptions{ServerName: "mail.test", CAFile: certstest.WriteCAFile(t, ca)})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.InsecureSkipVerify {
		t.Error("InsecureSkipVerify is set")
	}
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %#x, want TLS 1.2 by default", cfg.MinVersion)
	}
	if cfg.ServerName != "mail.test" || cfg.RootCAs == nil {
		t.Errorf("ServerName %q, RootCAs %v", cfg.ServerName, cfg.RootCAs)
	}
	cfg, err = certs.ClientConfig(certs.ClientOptions{ServerName: "mail.test", MinVersion: tls.VersionTLS13})
	if err != nil || cfg.MinVersion != tls.VersionTLS13 {
		t.Errorf("MinVersion 1.3: %v, %v", cfg, err)
	}
}

// handshake runs a loopback TLS handshake and returns the client's error.
func handshake(t *testing.T, server, client *tls.Config) error {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.(*tls.Conn).Handshake()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := tls.Dialer{Config: client}
	c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return err
	}
	return c.Close()
}

func TestClientConfigVerifies(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	certFile, keyFile := certstest.WriteKeyPair(t, certstest.Leaf(t, ca, "mail.test", "127.0.0.1"))
	r, err := certs.NewReloader(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	server := certs.ServerConfig(r, 0)

	caFile := certstest.WriteCAFile(t, ca)
	for _, tt := range []struct {
		name string
		opts certs.ClientOptions
		ok   bool
	}{
		{name: "CA file", opts: certs.ClientOptions{ServerName: "mail.test", CAFile: caFile}, ok: true},
		{name: "extra roots", opts: certs.ClientOptions{ServerName: "mail.test", ExtraRoots: ca.Pool()}, ok: true},
		{name: "IP SAN", opts: certs.ClientOptions{ServerName: "127.0.0.1", ExtraRoots: ca.Pool()}, ok: true},
		{name: "system roots only", opts: certs.ClientOptions{ServerName: "mail.test"}},
		{name: "wrong name", opts: certs.ClientOptions{ServerName: "other.test", CAFile: caFile}},
		{name: "other CA", opts: certs.ClientOptions{ServerName: "mail.test", ExtraRoots: certstest.NewCA(t).Pool()}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := certs.ClientConfig(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			err = handshake(t, server, cfg)
			if tt.ok && err != nil {
				t.Errorf("handshake failed: %v", err)
			}
			if !tt.ok && err == nil {
				t.Error("handshake succeeded, want a verification failure")
			}
		})
	}
}

func TestClientConfigDoesNotMutateExtraRoots(t *testing.T) {
	t.Parallel()
	ca, other := certstest.NewCA(t), certstest.NewCA(t)
	pool := ca.Pool()
	before := pool.Clone()
	if _, err := certs.ClientConfig(certs.ClientOptions{ServerName: "x", ExtraRoots: pool, CAFile: certstest.WriteCAFile(t, other)}); err != nil {
		t.Fatal(err)
	}
	if !pool.Equal(before) {
		t.Error("ClientConfig added CAFile certificates to the caller's ExtraRoots pool")
	}
}

func TestLoadPool(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	pool, err := certs.LoadPool(certstest.WriteCAFile(t, ca))
	if err != nil {
		t.Fatal(err)
	}
	if !pool.Equal(ca.Pool()) {
		t.Error("LoadPool did not return a pool holding exactly the CA")
	}
	if _, err := certs.LoadPool(filepath.Join(t.TempDir(), "nope.pem")); err == nil {
		t.Error("LoadPool of a missing file: no error")
	}
}

func TestReloaderKeepsOldPairOnBadReload(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	first := certstest.Leaf(t, ca, "first.test")
	certFile, keyFile := certstest.WriteKeyPair(t, first)
	r, err := certs.NewReloader(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	serving := func() *x509.Certificate {
		t.Helper()
		c, err := r.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil || c == nil {
			t.Fatalf("GetCertificate = %v, %v", c, err)
		}
		return c.Leaf
	}
	if got := serving(); !got.Equal(first.Leaf) {
		t.Fatalf("serving %v, want the first leaf", got.DNSNames)
	}

	// A half-written renewal: the certificate file is truncated.
	if err := os.WriteFile(certFile, []byte("-----BEGIN CERT"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err == nil || !strings.Contains(err.Error(), certFile) {
		t.Fatalf("Reload of a broken file: err = %v, want one naming %s", err, certFile)
	}
	if got := serving(); !got.Equal(first.Leaf) {
		t.Fatalf("after a failed reload serving %v, want the old leaf", got.DNSNames)
	}

	// A key that does not match the certificate is also refused.
	second := certstest.Leaf(t, ca, "second.test")
	otherCert, _ := certstest.WriteKeyPair(t, second)
	data, err := os.ReadFile(otherCert)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err == nil {
		t.Fatal("Reload with a mismatched key succeeded")
	}
	if got := serving(); !got.Equal(first.Leaf) {
		t.Fatalf("after a mismatched reload serving %v, want the old leaf", got.DNSNames)
	}

	// A good renewal is picked up.
	newCert, newKey := certstest.WriteKeyPair(t, second)
	for _, p := range [][2]string{{newCert, certFile}, {newKey, keyFile}} {
		data, err := os.ReadFile(p[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p[1], data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := serving(); !got.Equal(second.Leaf) || !r.Leaf().Equal(second.Leaf) {
		t.Fatalf("after a good reload serving %v, want the new leaf", got.DNSNames)
	}
}

func TestNewReloaderFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := certs.NewReloader(filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")); err == nil {
		t.Fatal("NewReloader with missing files: no error")
	}
}

func TestServerConfigRaisesMinVersion(t *testing.T) {
	t.Parallel()
	certFile, keyFile := certstest.WriteKeyPair(t, certstest.SelfSigned(t, "localhost"))
	r, err := certs.NewReloader(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []uint16{0, tls.VersionTLS10, tls.VersionTLS11} {
		if got := certs.ServerConfig(r, v).MinVersion; got != tls.VersionTLS12 {
			t.Errorf("ServerConfig(%#x).MinVersion = %#x, want TLS 1.2", v, got)
		}
	}
	if got := certs.ServerConfig(r, tls.VersionTLS13).MinVersion; got != tls.VersionTLS13 {
		t.Errorf("ServerConfig(1.3).MinVersion = %#x", got)
	}
}

func TestIssue(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	leaf := certstest.Leaf(t, ca, "mail.test", "127.0.0.1", "::1")
	if _, err := ca.Issue(); !errors.Is(err, certs.ErrNoHosts) {
		t.Errorf("Issue() err = %v, want ErrNoHosts", err)
	}
	l := leaf.Leaf
	if len(l.DNSNames) != 1 || l.DNSNames[0] != "mail.test" || len(l.IPAddresses) != 2 {
		t.Errorf("SANs: DNS %v IP %v", l.DNSNames, l.IPAddresses)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := l.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "mail.test", KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("verify for usage %v: %v", usage, err)
		}
	}
	if l.NotBefore.After(time.Now().Add(-time.Hour)) || l.NotAfter.After(ca.Certificate().NotAfter) {
		t.Errorf("validity %v – %v", l.NotBefore, l.NotAfter)
	}
	if !ca.Certificate().IsCA {
		t.Error("CA certificate is not a CA")
	}
}

func TestSelfSigned(t *testing.T) {
	t.Parallel()
	cert, certPEM, err := certs.SelfSigned("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(certPEM) {
		t.Fatal("returned PEM does not parse")
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
		t.Errorf("self-signed leaf does not verify against itself: %v", err)
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: "localhost"}); err == nil {
		t.Error("self-signed leaf verifies against system roots")
	}
	if _, _, err := certs.SelfSigned(); !errors.Is(err, certs.ErrNoHosts) {
		t.Errorf("SelfSigned() err = %v", err)
	}
}

func TestKeyPairPEMRoundTrip(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	leaf := certstest.Leaf(t, ca, "mail.test")
	certPEM, keyPEM, err := certs.KeyPairPEM(leaf)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Certificate) != 2 || !got.Leaf.Equal(leaf.Leaf) {
		t.Errorf("round trip lost the chain: %d certificates", len(got.Certificate))
	}
}

func TestCertstestHelpersAreIndependent(t *testing.T) {
	t.Parallel()
	a, b := certstest.NewCA(t), certstest.NewCA(t)
	if a.Certificate().Equal(b.Certificate()) {
		t.Fatal("two NewCA calls returned the same CA")
	}
	leaf := certstest.Leaf(t, a, "x.test")
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{Roots: b.Pool(), DNSName: "x.test"}); err == nil {
		t.Error("a leaf from one CA verifies against another")
	}
}
