package upstream

import (
	"encoding/base64"
	"errors"
	"strings"

	"github.com/emersion/go-sasl"
)

// xoauth2Client implements Google's and Microsoft's XOAUTH2 SASL
// mechanism, which go-sasl does not provide.
type xoauth2Client struct {
	user, token string
	// serverError is the JSON the server sends in its 334 challenge when
	// the token is refused; kept for the error message (it names the
	// problem, e.g. an expired token or a missing scope).
	serverError []byte
}

func (a *xoauth2Client) Start() (string, []byte, error) {
	return "XOAUTH2", []byte(xoauth2Response(a.user, a.token)), nil
}

// Next answers the error challenge with an empty line, as the mechanism
// requires, so the server follows with its final 535.
func (a *xoauth2Client) Next(challenge []byte) ([]byte, error) {
	if a.serverError != nil {
		return nil, errors.New("XOAUTH2: unexpected second challenge")
	}
	a.serverError = append([]byte{}, challenge...)
	return []byte{}, nil
}

// oauthBearerClient answers a refusal the way RFC 7628 section 3.2.3
// asks (a single 0x01), so the server ends with its final 535 and the
// failure reads as a refused credential; go-sasl's client aborts with "*"
// instead, which servers answer with 501.
type oauthBearerClient struct {
	sasl.Client
	serverError []byte
}

func (a *oauthBearerClient) Next(challenge []byte) ([]byte, error) {
	if a.serverError != nil {
		return nil, errors.New("OAUTHBEARER: unexpected second challenge")
	}
	a.serverError = append([]byte{}, challenge...)
	return []byte{0x01}, nil
}

func xoauth2Response(user, token string) string {
	return "user=" + user + "\x01auth=Bearer " + token + "\x01\x01"
}

// saslClient builds the client for mech and lists the encodings of what it
// will send that must be scrubbed from any reply echoed into an error.
func saslClient(mech Mechanism, user string, secret Secret) (sasl.Client, []string) {
	pw := secret.Reveal()
	var wire []string
	var c sasl.Client
	switch mech {
	case MechanismLogin:
		c = sasl.NewLoginClient(user, pw)
		wire = []string{pw}
	case MechanismXOAUTH2:
		c = &xoauth2Client{user: user, token: pw}
		wire = []string{xoauth2Response(user, pw)}
	case MechanismOAuthBearer:
		ob := &oauthBearerClient{Client: sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: user, Token: pw})}
		_, ir, _ := ob.Start()
		c = ob
		wire = []string{string(ir)}
	default:
		c = sasl.NewPlainClient("", user, pw)
		wire = []string{"\x00" + user + "\x00" + pw}
	}
	sensitive := []string{pw}
	for _, w := range wire {
		sensitive = append(sensitive,
			base64.StdEncoding.EncodeToString([]byte(w)),
			base64.RawStdEncoding.EncodeToString([]byte(w)))
	}
	return c, sensitive
}

// scrub removes sensitive strings from server-provided text. Servers have
// been seen to echo the offending line in error replies; the secret must
// not reach logs that way.
func scrub(s string, sensitive []string) string {
	for _, v := range sensitive {
		// Even a very short secret is replaced: mangled error text is a
		// smaller harm than a leaked password.
		if v != "" {
			s = strings.ReplaceAll(s, v, redacted)
		}
	}
	return s
}

// scrubbedError keeps the chain of a wrapped error for errors.Is/As while
// presenting a scrubbed message.
type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }
