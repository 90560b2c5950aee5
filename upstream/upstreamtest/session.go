package upstreamtest

import (
	"bytes"
	"crypto/tls"
	"io"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

var (
	errAuthFailed   = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
	errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
)

type backend struct{ s *Server }

func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	sess := &session{s: b.s, conn: c, id: connID(c)}
	// NewSession runs on the first EHLO/HELO and again after STARTTLS.
	sess.record("EHLO", "")
	return sess, nil
}

// connID finds the sniffer below go-smtp's connection (possibly under TLS)
// to learn the connection number.
func connID(c *smtp.Conn) int {
	nc := c.Conn()
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	if sc, ok := nc.(*sniffConn); ok {
		return sc.id
	}
	return 0
}

type session struct {
	s    *Server
	conn *smtp.Conn
	id   int

	authUser, authMech string
	from               string
	mailOpts           smtp.MailOptions
	to                 []string
}

// record logs commands that arrive over TLS; plaintext ones are recorded
// by the sniffer, which sees even those go-smtp rejects by itself.
func (s *session) record(verb, arg string) {
	if _, isTLS := s.conn.TLSConnectionState(); isTLS {
		s.s.record(Command{Conn: s.id, Verb: verb, Arg: arg, TLS: true})
	}
}

func (s *session) tlsVersion() uint16 {
	if st, ok := s.conn.TLSConnectionState(); ok {
		return st.Version
	}
	return 0
}

func (s *session) AuthMechanisms() []string { return s.s.mechanisms() }

func (s *session) Auth(mech string) (sasl.Server, error) {
	s.record("AUTH", mech)
	succeed := func(user string) {
		s.authUser, s.authMech = user, mech
	}
	users, tokens := s.s.opts.Users, s.s.opts.Tokens
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, user, pass string) error {
			if identity != "" && identity != user {
				return errAuthFailed
			}
			if want, ok := users[user]; !ok || want != pass {
				return errAuthFailed
			}
			succeed(user)
			return nil
		}), nil
	case sasl.Login:
		return &loginServer{check: func(user, pass string) error {
			if want, ok := users[user]; !ok || want != pass {
				return errAuthFailed
			}
			succeed(user)
			return nil
		}}, nil
	case "XOAUTH2", "OAUTHBEARER":
		check := func(user, token string) bool {
			want, ok := s.s.token(user, tokens)
			if ok && want == token {
				succeed(user)
				return true
			}
			return false
		}
		if mech == "OAUTHBEARER" {
			return &oauthBearerServer{check: check}, nil
		}
		return &xoauth2Server{check: check}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.record("MAIL", "FROM:<"+from+">")
	if s.s.authRequired() && s.authUser == "" {
		return errAuthRequired
	}
	if r := s.s.opts.MailReply; r != nil {
		return r
	}
	s.from = from
	if opts != nil {
		s.mailOpts = *opts
	}
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.record("RCPT", "TO:<"+to+">")
	if f := s.s.opts.RcptReply; f != nil {
		if r := f(to); r != nil {
			return r
		}
	}
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	s.record("DATA", "")
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if reply := s.s.opts.DataReply; reply != nil {
		return reply
	}
	s.s.deliver(Received{
		From:          s.from,
		To:            append([]string(nil), s.to...),
		Data:          data,
		TLSVersion:    s.tlsVersion(),
		AuthUser:      s.authUser,
		AuthMechanism: s.authMech,
		SMTPUTF8:      s.mailOpts.UTF8,
		Size:          s.mailOpts.Size,
	})
	return nil
}

func (s *session) Reset() {
	s.from, s.to, s.mailOpts = "", nil, smtp.MailOptions{}
}

func (s *session) Logout() error { return nil }

// loginServer is the server side of SASL LOGIN, which go-sasl lacks.
type loginServer struct {
	check      func(user, pass string) error
	user       string
	gotUser    bool
	challenged bool
}

func (a *loginServer) Next(response []byte) ([]byte, bool, error) {
	switch {
	case !a.gotUser && response == nil && !a.challenged:
		a.challenged = true
		return []byte("Username:"), false, nil
	case !a.gotUser:
		a.user, a.gotUser = string(response), true
		return []byte("Password:"), false, nil
	default:
		return nil, true, a.check(a.user, string(response))
	}
}

// xoauth2Server follows Google's XOAUTH2 behaviour: a bad token gets a 334
// with a JSON error, the client answers with an empty line, and then 535.
type xoauth2Server struct {
	check  func(user, token string) bool
	failed bool
}

func (a *xoauth2Server) Next(response []byte) ([]byte, bool, error) {
	if a.failed {
		return nil, true, errAuthFailed
	}
	if user, token, ok := parseXOAUTH2(response); ok && a.check(user, token) {
		return nil, true, nil
	}
	a.failed = true
	return []byte(`{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`), false, nil
}

func parseXOAUTH2(b []byte) (user, token string, ok bool) {
	fields := bytes.Split(b, []byte{1})
	for _, f := range fields {
		k, v, _ := strings.Cut(string(f), "=")
		switch k {
		case "user":
			user = v
		case "auth":
			token, ok = strings.CutPrefix(v, "Bearer ")
		}
	}
	return user, token, ok && user != ""
}
