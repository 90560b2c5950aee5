// Package certstest provides throwaway certificates for tests, in the style
// of net/http/httptest: every helper fails the test instead of returning an
// error, and files go into t.TempDir().
package certstest

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"

	"sealpost/certs"
)

// NewCA returns a fresh CA for this test.
func NewCA(t testing.TB) *certs.CA {
	t.Helper()
	ca, err := certs.NewCA("sealpost test CA " + t.Name())
	if err != nil {
		t.Fatalf("certstest: %v", err)
	}
	return ca
}

// Leaf issues a certificate from ca for the given host names and IPs.
func Leaf(t testing.TB, ca *certs.CA, hosts ...string) tls.Certificate {
	t.Helper()
	cert, err := ca.Issue(hosts...)
	if err != nil {
		t.Fatalf("certstest: issuing leaf for %v: %v", hosts, err)
	}
	return cert
}

// WriteCAFile writes ca's certificate as PEM into t.TempDir() and returns
// the path, ready for a ca_file setting.
func WriteCAFile(t testing.TB, ca *certs.CA) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, ca.CertPEM(), 0o600); err != nil {
		t.Fatalf("certstest: %v", err)
	}
	return path
}

// SelfSigned returns a self-signed certificate for the given hosts, which
// nothing trusts: the thing to present when a test wants verification to
// fail.
func SelfSigned(t testing.TB, hosts ...string) tls.Certificate {
	t.Helper()
	cert, _, err := certs.SelfSigned(hosts...)
	if err != nil {
		t.Fatalf("certstest: self-signing for %v: %v", hosts, err)
	}
	return cert
}

// WriteKeyPair writes cert's chain and key as PEM files (key mode 0600)
// into a fresh temporary directory and returns their paths.
func WriteKeyPair(t testing.TB, cert tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM, err := certs.KeyPairPEM(cert)
	if err != nil {
		t.Fatalf("certstest: %v", err)
	}
	dir := t.TempDir()
	certFile = filepath.Join(dir, "cert.pem")
	keyFile = filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatalf("certstest: %v", err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatalf("certstest: %v", err)
	}
	return certFile, keyFile
}
