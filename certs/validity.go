package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// IssueValidity is Issue with a chosen validity period, so tests can play
// an upstream whose certificate expired or is about to (what `sealpost
// check -live` warns about). The period may extend past the CA's own.
func (ca *CA) IssueValidity(notBefore, notAfter time.Time, hosts ...string) (tls.Certificate, error) {
	if len(hosts) == 0 {
		return tls.Certificate{}, ErrNoHosts
	}
	if !notAfter.After(notBefore) {
		return tls.Certificate{}, errors.New("certificate validity: notAfter must be after notBefore")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generating leaf key: %w", err)
	}
	tmpl, err := leafTemplate(hosts)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl.NotBefore, tmpl.NotAfter = notBefore, notAfter
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("signing leaf for %v: %w", hosts, err)
	}
	return keyPair(der, ca.der, key)
}
