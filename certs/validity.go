package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"time"
)

// IssueValidity is Issue with a chosen validity period, so tests can play
// an upstream whose certificate expired or is about to (what `sealpost
// check -live` warns about). The period may extend past the CA's own.
func (ca *CA) IssueValidity(notBefore, notAfter time.Time, hosts ...string) (tls.Certificate, error) {
	if !notAfter.After(notBefore) {
		return tls.Certificate{}, errors.New("certificate validity: notAfter must be after notBefore")
	}
	return ca.issue(hosts, func(tmpl *x509.Certificate) {
		tmpl.NotBefore, tmpl.NotAfter = notBefore, notAfter
	})
}
