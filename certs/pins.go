package certs

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// ErrPinMismatch is returned (wrapped) when a verified chain contains no
// certificate whose public key matches a configured pin.
var ErrPinMismatch = errors.New("no certificate in the verified chain matches a configured pin")

// A pin is "sha256/" followed by the standard base64 of the SHA-256 of a
// certificate's SubjectPublicKeyInfo, the form HPKP made familiar and that
// `openssl x509 -pubkey | openssl pkey -pubin -outform der | openssl dgst
// -sha256 -binary | base64` prints. Pinning the key rather than the
// certificate survives renewals that keep the key.
const pinPrefix = "sha256/"

// ParsePin checks one pin and returns its digest.
func ParsePin(s string) ([sha256.Size]byte, error) {
	var d [sha256.Size]byte
	b64, ok := strings.CutPrefix(strings.TrimSpace(s), pinPrefix)
	if !ok {
		return d, fmt.Errorf("pin %q: must start with %q", s, pinPrefix)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != sha256.Size {
		return d, fmt.Errorf("pin %q: want the base64 of a 32-byte SHA-256 digest", s)
	}
	copy(d[:], raw)
	return d, nil
}

// Pin returns the pin of a certificate's public key.
func Pin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return pinPrefix + base64.StdEncoding.EncodeToString(sum[:])
}

// pinVerifier returns a VerifyConnection hook that runs after the normal
// chain and host name verification (never instead of it) and requires one
// certificate of a verified chain to carry a pinned key.
func pinVerifier(pins []string) (func(tls.ConnectionState) error, error) {
	want := make(map[[sha256.Size]byte]bool, len(pins))
	for _, p := range pins {
		d, err := ParsePin(p)
		if err != nil {
			return nil, err
		}
		want[d] = true
	}
	return func(cs tls.ConnectionState) error {
		for _, chain := range cs.VerifiedChains {
			for _, cert := range chain {
				if want[sha256.Sum256(cert.RawSubjectPublicKeyInfo)] {
					return nil
				}
			}
		}
		leaf := "none"
		if len(cs.PeerCertificates) > 0 {
			leaf = Pin(cs.PeerCertificates[0])
		}
		return fmt.Errorf("%w (the server's key is %s)", ErrPinMismatch, leaf)
	}, nil
}
