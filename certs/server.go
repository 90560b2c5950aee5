package certs

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync/atomic"
)

// Reloader serves a certificate/key pair loaded from files and can reload
// it while the server runs (on SIGHUP), so renewing a certificate needs no
// restart and drops no connection. It is safe for concurrent use.
type Reloader struct {
	certFile, keyFile string
	current           atomic.Pointer[tls.Certificate]
}

// NewReloader loads the pair once; a pair that does not load is an error
// at start-up rather than at the first handshake.
func NewReloader(certFile, keyFile string) (*Reloader, error) {
	r := &Reloader{certFile: certFile, keyFile: keyFile}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload reads the files again. On error the previously loaded pair stays
// in service: a half-copied renewal must not take the listener down.
func (r *Reloader) Reload() error {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("loading certificate %s with key %s: %w", r.certFile, r.keyFile, err)
	}
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return fmt.Errorf("parsing certificate %s: %w", r.certFile, err)
		}
		cert.Leaf = leaf
	}
	r.current.Store(&cert)
	return nil
}

// GetCertificate is meant for tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.current.Load(), nil
}

// Leaf returns the certificate currently served, for reporting its expiry.
func (r *Reloader) Leaf() *x509.Certificate {
	return r.current.Load().Leaf
}

// ServerConfig builds the listener's TLS configuration. A minVersion below
// TLS 1.2 (including zero) is raised to TLS 1.2: the listener never offers
// deprecated versions.
func ServerConfig(r *Reloader, minVersion uint16) *tls.Config {
	if minVersion < tls.VersionTLS12 {
		minVersion = tls.VersionTLS12
	}
	return &tls.Config{
		GetCertificate: r.GetCertificate,
		MinVersion:     minVersion,
	}
}
