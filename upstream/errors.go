package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/emersion/go-smtp"

	"sealpost/certs"
)

// Names of the TLS checks a TLSError can report. They are stable: logs and
// alerts match on them.
const (
	CheckStartTLSNotOffered = "starttls-not-offered"
	CheckStartTLSRefused    = "starttls-refused"   // STARTTLS answered with an error
	CheckStartTLSInjection  = "starttls-injection" // plaintext sent after the 220 to STARTTLS
	CheckHandshake          = "handshake"
	CheckUntrusted          = "certificate-untrusted"
	CheckHostname           = "certificate-hostname"
	CheckExpired            = "certificate-expired"
	CheckInvalid            = "certificate-invalid"
	CheckProtocolVersion    = "protocol-version"
	CheckNotVerified        = "not-verified"    // handshake reported done but without verified chains
	CheckPin                = "certificate-pin" // verified, but no key in the chain matches upstream.pins
)

// TLSError reports which TLS check failed. It is always temporary: a
// misconfigured or impersonated upstream is not the message's fault, and the
// mail must stay queued until TLS is right again.
type TLSError struct {
	Check string
	Err   error
}

func (e *TLSError) Error() string {
	if e.Err == nil {
		return "upstream TLS check " + e.Check + " failed"
	}
	return "upstream TLS check " + e.Check + " failed: " + e.Err.Error()
}

func (e *TLSError) Unwrap() error { return e.Err }

// Temporary is always true; see the type's documentation.
func (e *TLSError) Temporary() bool { return true }

// Sentinel errors wrapped by *Error.
var (
	// ErrAuthRejected: the upstream refused the credentials (535 and the
	// like). Callers should log it loudly; it is still temporary.
	ErrAuthRejected = errors.New("upstream rejected the credentials")
	// ErrMechanismNotOffered: the upstream does not advertise the SASL
	// mechanism the configuration asks for.
	ErrMechanismNotOffered = errors.New("SASL mechanism not offered by upstream")
	// ErrAllRecipientsRefused: every RCPT was refused, so no DATA was sent.
	// The per-recipient errors say how each one was refused.
	ErrAllRecipientsRefused = errors.New("upstream refused all recipients")
)

// Error is the error Deliver returns. Op is where it happened: "dial",
// "greeting", "ehlo", "starttls", "tls", "auth", "rset" (a reused
// connection that failed before MAIL), "mail", "rcpt" or "data".
// Code, EnhancedCode and Message are the server's reply when there was one.
//
// Error() never contains a credential: the secret is never put into an
// Error, and replies to AUTH are scrubbed of anything that echoes it.
type Error struct {
	Op           string
	Code         int
	EnhancedCode [3]int
	Message      string
	Err          error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("upstream ")
	b.WriteString(e.Op)
	b.WriteString(": ")
	if e.Code != 0 {
		fmt.Fprintf(&b, "%d ", e.Code)
		if e.EnhancedCode != ([3]int{}) && e.EnhancedCode != [3]int(smtp.NoEnhancedCode) {
			fmt.Fprintf(&b, "%d.%d.%d ", e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2])
		}
		b.WriteString(e.Message)
		if e.Err != nil {
			b.WriteString(" (")
			b.WriteString(e.Err.Error())
			b.WriteString(")")
		}
		return b.String()
	}
	switch {
	case e.Message != "" && e.Err != nil:
		b.WriteString(e.Message + ": " + e.Err.Error())
	case e.Message != "":
		b.WriteString(e.Message)
	case e.Err != nil:
		b.WriteString(e.Err.Error())
	default:
		b.WriteString("failed")
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether the attempt should be retried.
//
// Only a 5xx reply to MAIL, RCPT or DATA is permanent: those are about this
// message. Everything else is temporary:
//   - 4xx replies, network errors, timeouts and cancellation, by definition;
//   - TLS failures, because the fix is on the upstream's or the operator's
//     side and bouncing would lose mail that TLS will carry tomorrow;
//   - AUTH failures including 535: a wrong or expired password is a
//     configuration problem of this host, and bouncing the whole queue for
//     it would turn one typo into lost mail. It is reported with
//     ErrAuthRejected so it can be logged at error level;
//   - 5xx at greeting, EHLO or STARTTLS: the upstream refusing this relay
//     (an IP block, a policy change) is likewise not the message's fault;
//   - anything unknown: retrying is recoverable, a bounce is not.
func (e *Error) Temporary() bool {
	var tlsErr *TLSError
	if errors.As(e.Err, &tlsErr) {
		return true
	}
	if e.Code >= 500 && e.Code < 600 {
		switch e.Op {
		case "mail", "rcpt", "data":
			return false
		}
	}
	return true
}

// IsTemporary reports whether err (from Deliver, or one entry of its
// per-recipient slice) should be retried. Errors of other types are
// treated as temporary.
func IsTemporary(err error) bool {
	if err == nil {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Temporary()
	}
	return true
}

// newError converts what go-smtp and the network return into *Error,
// keeping the reply code so Temporary can classify it.
func newError(ctx context.Context, op string, err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	// A connection closed because ctx ended reports "use of closed
	// network connection"; the context's error says what happened.
	if ctx != nil && ctx.Err() != nil {
		return &Error{Op: op, Err: context.Cause(ctx)}
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return &Error{Op: op, Code: se.Code, EnhancedCode: [3]int(se.EnhancedCode), Message: se.Message}
	}
	return &Error{Op: op, Err: err}
}

// classifyTLS names the check a handshake error failed.
func classifyTLS(err error) string {
	var (
		hostErr    x509.HostnameError
		authErr    x509.UnknownAuthorityError
		invalidErr x509.CertificateInvalidError
		rootsErr   x509.SystemRootsError
		verifyErr  *tls.CertificateVerificationError
	)
	switch {
	case errors.Is(err, certs.ErrPinMismatch):
		return CheckPin
	case errors.As(err, &hostErr):
		return CheckHostname
	case errors.As(err, &authErr), errors.As(err, &rootsErr):
		return CheckUntrusted
	case errors.As(err, &invalidErr):
		if invalidErr.Reason == x509.Expired {
			return CheckExpired
		}
		return CheckInvalid
	case errors.As(err, &verifyErr):
		return CheckInvalid
	case isVersionError(err):
		return CheckProtocolVersion
	}
	return CheckHandshake
}

// isVersionError recognises a failed version negotiation. crypto/tls does
// not export a type for it: when the server only speaks older versions it
// either answers with a protocol_version alert (seen as a *net.OpError
// "remote error") or picks a version we did not offer.
func isVersionError(err error) bool {
	msg := err.Error()
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "remote error" {
		msg = opErr.Err.Error()
	}
	return strings.Contains(msg, "protocol version not supported") ||
		strings.Contains(msg, "unsupported protocol version") ||
		strings.Contains(msg, "unsupported versions")
}

// checkTLSState is the explicit confirmation that the connection is
// encrypted and verified, done before AUTH and MAIL: neither go-smtp nor
// go-sasl checks this, so without it a bug elsewhere (a config with
// verification turned off, a path that skipped the handshake) would send the
// password in the clear or to an impostor.
func checkTLSState(st tls.ConnectionState, minVersion uint16) error {
	switch {
	case !st.HandshakeComplete:
		return &TLSError{Check: CheckHandshake, Err: errors.New("handshake not complete")}
	case len(st.VerifiedChains) == 0:
		return &TLSError{Check: CheckNotVerified, Err: errors.New("no verified certificate chain")}
	case st.Version < minVersion || st.Version < tls.VersionTLS12:
		return &TLSError{Check: CheckProtocolVersion, Err: fmt.Errorf("negotiated %s, below the minimum %s", tls.VersionName(st.Version), tls.VersionName(minVersion))}
	}
	return nil
}
