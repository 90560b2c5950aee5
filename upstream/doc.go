// Package upstream is sealpost's smarthost client: it dials the upstream
// provider, insists on verified TLS, authenticates with SASL (PLAIN, LOGIN
// or XOAUTH2) and hands over one message.
//
// Three promises live here, each with a test that fails without it:
//
//   - TLS is always on and verified. In "starttls" mode the client requires
//     STARTTLS to be advertised; in "implicit" mode TLS starts with the first
//     byte. A missing STARTTLS, a failed handshake, an untrusted or
//     mismatched certificate or a version below the minimum closes the
//     connection before AUTH or MAIL is sent, and the failure is a
//     *TLSError naming the check. There is no plaintext mode.
//   - Failures are classified: Error.Temporary says whether the spool
//     should retry (4xx, network, TLS, authentication) or bounce (5xx to
//     MAIL, RCPT or DATA).
//   - Credentials never appear in errors or logs: they travel as Secret,
//     which prints as "[redacted]" through fmt, slog and encoding/json, and
//     server replies to AUTH are scrubbed of anything that echoes them.
//
// go-smtp's Client greets and authenticates; the mail transactions are
// driven by transaction.go, which pipelines the envelope when the upstream
// offers PIPELINING (RFC 2920) and writes the body through one large
// buffer, so a message on a reused connection costs two writes and two
// round trips.
//
// The package knows nothing of the spool; the spool calls Deliver through
// an interface of its own.
package upstream
