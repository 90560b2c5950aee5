package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
)

// ProbeResult is what Probe learnt about the upstream, filled as far as the
// probe got: on error, the fields before the failing step are still set.
type ProbeResult struct {
	// StartTLS reports that the upstream advertised and accepted STARTTLS
	// (always false in implicit mode, where TLS starts with the connection).
	StartTLS bool
	// TLSVersion ("TLS1.3") and CipherSuite of the verified connection.
	TLSVersion  string
	CipherSuite string
	// Verified is true once the chain and host name were verified.
	Verified bool
	// ServerName is the name the certificate was checked against.
	ServerName string
	// Leaf is the certificate the upstream presented, also when it failed
	// verification (expired, wrong host), so the caller can say why.
	Leaf *x509.Certificate
	// AuthMechanism is the SASL mechanism used ("PLAIN"); empty when no
	// username is configured. Authenticated is true once AUTH succeeded.
	AuthMechanism string
	Authenticated bool
}

// Probe checks the upstream the way a delivery would reach it, without
// sending mail: it dials, insists on (STARTTLS and) verified TLS, logs in
// with the configured secret and says QUIT. It is for `sealpost check
// -live`. The error is an *Error, as from Deliver.
func (c *Client) Probe(ctx context.Context) (ProbeResult, error) {
	res := ProbeResult{ServerName: c.tls.ServerName}
	var secret Secret
	if c.cfg.Secret != nil {
		var err error
		secret, err = c.cfg.Secret(ctx)
		if err == nil && secret.IsZero() {
			err = errors.New("the secret is empty")
		}
		if err != nil {
			return res, &Error{Op: "auth", Message: "loading the upstream password", Err: err}
		}
	}
	s, err := c.open(ctx, secret)
	if s != nil {
		defer s.close()
		res.TLSVersion, res.CipherSuite = s.tlsInfo()
		if s.tls != nil {
			// A handshake was attempted, so in STARTTLS mode the upstream
			// advertised STARTTLS and accepted it.
			res.StartTLS = c.cfg.TLSMode == ModeStartTLS
			st := s.tls.ConnectionState()
			res.Verified = st.HandshakeComplete && len(st.VerifiedChains) > 0
			if len(st.PeerCertificates) > 0 {
				res.Leaf = st.PeerCertificates[0]
			}
		}
	}
	if err != nil {
		// A failed verification leaves the peer's certificates out of the
		// connection state; the error still carries them.
		var verifyErr *tls.CertificateVerificationError
		if res.Leaf == nil && errors.As(err, &verifyErr) && len(verifyErr.UnverifiedCertificates) > 0 {
			res.Leaf = verifyErr.UnverifiedCertificates[0]
		}
		return res, err
	}
	if c.cfg.Username != "" {
		res.Authenticated = true
		res.AuthMechanism = strings.ToUpper(string(c.cfg.Auth))
		if c.cfg.Auth == MechanismAuto {
			// The same choice auth made: PLAIN if offered, else LOGIN.
			res.AuthMechanism = "LOGIN"
			if s.smt.SupportsAuth("PLAIN") {
				res.AuthMechanism = "PLAIN"
			}
		}
	}
	s.quit()
	return res, nil
}
