package certs

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// ErrNoCertificate is wrapped when a PEM file holds no usable certificate.
var ErrNoCertificate = errors.New("no certificate found")

// ErrNoServerName is returned by ClientConfig when ServerName is empty:
// without it there is no host name to verify, and a certificate for any
// name signed by a trusted root would be accepted.
var ErrNoServerName = errors.New("TLS server name is required to verify the upstream's certificate")

// ClientOptions describes the trust a client configuration carries.
type ClientOptions struct {
	// ServerName is the host name the peer's certificate must match.
	// Required.
	ServerName string

	// CAFile is an optional PEM bundle of extra trusted roots, added to the
	// system roots (or to ExtraRoots, see there).
	CAFile string

	// ExtraRoots, when set, is used INSTEAD of the system roots, with
	// CAFile's certificates added to a copy of it. x509.CertPool has no way
	// to list or merge its contents, so "system roots + ExtraRoots" cannot
	// be built; trusting only the given pool is the narrower choice and is
	// what tests and `sealpost demo` (a throwaway CA) want anyway.
	ExtraRoots *x509.CertPool

	// Pins, when set, additionally require a certificate of the verified
	// chain to have one of these public keys ("sha256/BASE64", see Pin).
	// They narrow trust; they never replace chain and name verification.
	Pins []string

	// MinVersion is the lowest TLS version accepted. Zero means TLS 1.2;
	// anything below TLS 1.2 is an error.
	MinVersion uint16
}

// ClientConfig builds the TLS configuration for connecting to an upstream.
// It always verifies the chain and the host name: there is no way to get a
// configuration with InsecureSkipVerify from this package.
func ClientConfig(opts ClientOptions) (*tls.Config, error) {
	if opts.ServerName == "" {
		return nil, ErrNoServerName
	}
	minVersion, err := checkMinVersion(opts.MinVersion)
	if err != nil {
		return nil, err
	}

	var roots *x509.CertPool
	if opts.ExtraRoots != nil {
		roots = opts.ExtraRoots.Clone()
	} else {
		roots, err = x509.SystemCertPool()
		if err != nil {
			// Without system roots only CAFile can make verification
			// succeed; failing closed later is better than failing here
			// on hosts that only use a private CA.
			roots = x509.NewCertPool()
		}
	}
	if opts.CAFile != "" {
		if err := appendPEMFile(roots, opts.CAFile); err != nil {
			return nil, err
		}
	}

	cfg := &tls.Config{
		ServerName: opts.ServerName,
		RootCAs:    roots,
		MinVersion: minVersion,
	}
	if len(opts.Pins) > 0 {
		if cfg.VerifyConnection, err = pinVerifier(opts.Pins); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// LoadPool reads a PEM bundle of CA certificates into a new pool (without
// the system roots).
func LoadPool(caFile string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if err := appendPEMFile(pool, caFile); err != nil {
		return nil, err
	}
	return pool, nil
}

// appendPEMFile is stricter than CertPool.AppendCertsFromPEM, which skips
// blocks it cannot parse: a CA file with a corrupt certificate is a
// configuration mistake the operator should hear about, not a silent
// narrowing of trust.
func appendPEMFile(pool *x509.CertPool, file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("CA file %s: %w", file, err)
	}
	certs, err := parseCertsPEM(data)
	if err != nil {
		return fmt.Errorf("CA file %s: %w", file, err)
	}
	for _, c := range certs {
		pool.AddCert(c)
	}
	return nil
}

func parseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, ErrNoCertificate
	}
	return out, nil
}
