package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// session is one connection to the upstream, past TLS and AUTH. Deliver
// uses it for a single message; the Pool calls send again for the next.
// A session is used by one goroutine at a time.
type session struct {
	c   *Client
	raw net.Conn
	tls *tls.Conn
	// smt greets and authenticates; after that, transaction.go drives the
	// connection through r and w.
	smt *smtp.Client

	r       *textproto.Reader
	limit   *cappedReader
	w       *bufio.Writer
	scratch []byte // the body copy's buffer, kept between messages

	// What the upstream's EHLO advertised.
	pipelining, eightBit, size bool

	used   bool // a transaction was started; the next one begins with RSET
	broken bool // out of step with the server or the connection failed: never reuse
}

// open dials, establishes verified TLS, greets and authenticates. On error
// the returned session (if any) is only good for tlsInfo and close.
func (c *Client) open(ctx context.Context, secret Secret) (*session, error) {
	dialCtx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	raw, err := c.cfg.Dial(dialCtx, "tcp", c.cfg.Addr)
	cancel()
	if err != nil {
		return nil, newError(ctx, "dial", err)
	}
	s := &session{c: c, raw: raw}
	defer s.watch(ctx)()

	if c.cfg.TLSMode == ModeStartTLS {
		if err := s.plaintextPhase(ctx); err != nil {
			return s, err
		}
	}
	if err := s.handshake(ctx); err != nil {
		return s, err
	}

	var conn net.Conn = s.tls
	if c.cfg.TLSMode == ModeStartTLS {
		// go-smtp v0.25 cannot take over a connection after STARTTLS: its
		// Client insists on reading a 220 greeting first. The real greeting
		// was read in the plaintext phase, so hand it a stand-in.
		conn = &greetedConn{Conn: s.tls, greeting: []byte("220 " + c.host + " TLS established\r\n")}
	}
	s.smt = smtp.NewClient(conn)
	// Never set s.smt.DebugWriter: it would log the AUTH exchange.
	s.smt.CommandTimeout = c.cfg.CommandTimeout
	s.smt.SubmissionTimeout = 2 * c.cfg.CommandTimeout
	if err := s.smt.Hello(c.cfg.Hostname); err != nil {
		return s, newError(ctx, "ehlo", err)
	}
	if c.cfg.Username != "" {
		if err := s.auth(ctx, secret); err != nil {
			return s, err
		}
	}
	s.startTransactions()
	return s, nil
}

// watch makes ctx's end abort whatever the session is blocked on. go-smtp
// sets its own deadlines per command, so closing the connection is the
// one interruption it cannot override.
func (s *session) watch(ctx context.Context) (stop func() bool) {
	return context.AfterFunc(ctx, func() { s.raw.Close() })
}

// plaintextPhase reads the greeting, sends EHLO, insists on STARTTLS and
// issues it. It is done by hand rather than by go-smtp's
// NewClientStartTLS, which neither reports a missing STARTTLS as anything
// but a string nor lets us name ourselves in the first EHLO.
func (s *session) plaintextPhase(ctx context.Context) error {
	br := bufio.NewReader(s.raw)
	tp := textproto.NewReader(br)
	step := func(op string, expect int, cmd string) (string, error) {
		s.raw.SetDeadline(time.Now().Add(s.c.cfg.CommandTimeout))
		if cmd != "" {
			if _, err := io.WriteString(s.raw, cmd+"\r\n"); err != nil {
				return "", newError(ctx, op, err)
			}
		}
		_, msg, err := tp.ReadResponse(expect)
		if err != nil {
			return "", newError(ctx, op, replyError(err))
		}
		return msg, nil
	}

	if _, err := step("greeting", 220, ""); err != nil {
		return err
	}
	ehlo, err := step("ehlo", 250, "EHLO "+s.c.cfg.Hostname)
	if err != nil {
		return err
	}
	if !hasExtension(ehlo, "STARTTLS") {
		// Polite QUIT, but no waiting for its reply: nothing more is to be
		// said on this connection.
		s.raw.SetDeadline(time.Now().Add(time.Second))
		io.WriteString(s.raw, "QUIT\r\n")
		return &Error{Op: "starttls", Err: &TLSError{Check: CheckStartTLSNotOffered, Err: errors.New("the upstream's EHLO reply does not advertise STARTTLS")}}
	}
	if _, err := step("starttls", 220, "STARTTLS"); err != nil {
		var e *Error
		if errors.As(err, &e) && e.Code != 0 {
			e.Err = &TLSError{Check: CheckStartTLSRefused, Err: fmt.Errorf("STARTTLS answered %d", e.Code)}
		}
		return err
	}
	// Anything already buffered was sent in plaintext after the 220 and
	// would be read as if it came over TLS (the response injection of the
	// 2021 "NO STARTTLS" study). Refuse rather than discard silently.
	if br.Buffered() > 0 {
		return &Error{Op: "starttls", Err: &TLSError{Check: CheckStartTLSInjection, Err: fmt.Errorf("upstream sent %d bytes after its 220 to STARTTLS, before the handshake", br.Buffered())}}
	}
	s.raw.SetDeadline(time.Time{})
	return nil
}

// hasExtension looks for keyword in an EHLO reply (as returned by
// textproto: lines joined by \n, the first being the greeting).
func hasExtension(reply, keyword string) bool {
	lines := strings.Split(reply, "\n")
	for _, l := range lines[1:] {
		if f := strings.Fields(l); len(f) > 0 && strings.EqualFold(f[0], keyword) {
			return true
		}
	}
	return false
}

// replyError turns a textproto reply error into go-smtp's type, with the
// enhanced code split off, so newError treats both paths alike.
func replyError(err error) error {
	var te *textproto.Error
	if !errors.As(err, &te) {
		return err
	}
	se := &smtp.SMTPError{Code: te.Code, Message: te.Msg}
	if code, rest, ok := strings.Cut(te.Msg, " "); ok {
		parts := strings.Split(code, ".")
		if len(parts) == 3 {
			var ec smtp.EnhancedCode
			valid := true
			for i, p := range parts {
				n, err := strconv.Atoi(p)
				if err != nil {
					valid = false
					break
				}
				ec[i] = n
			}
			if valid {
				// RFC 2034 repeats the enhanced code on every line.
				se.EnhancedCode, se.Message = ec, strings.ReplaceAll(rest, "\n"+code+" ", "\n")
			}
		}
	}
	return se
}

func (s *session) handshake(ctx context.Context) error {
	s.tls = tls.Client(s.raw, s.c.tls)
	hctx, cancel := context.WithTimeout(ctx, s.c.cfg.CommandTimeout)
	defer cancel()
	if err := s.tls.HandshakeContext(hctx); err != nil {
		if ctx.Err() != nil {
			return &Error{Op: "tls", Err: context.Cause(ctx)}
		}
		return &Error{Op: "tls", Err: &TLSError{Check: classifyTLS(err), Err: err}}
	}
	if err := checkTLSState(s.tls.ConnectionState(), s.c.minVersion); err != nil {
		return &Error{Op: "tls", Err: err}
	}
	return nil
}

// requireTLS repeats the TLS check right before anything sensitive goes on
// the wire; see checkTLSState.
func (s *session) requireTLS(op string) error {
	if s.tls == nil {
		return &Error{Op: op, Err: &TLSError{Check: CheckHandshake, Err: errors.New("no TLS connection")}}
	}
	if err := checkTLSState(s.tls.ConnectionState(), s.c.minVersion); err != nil {
		return &Error{Op: op, Err: err}
	}
	return nil
}

func (s *session) auth(ctx context.Context, secret Secret) error {
	if err := s.requireTLS("auth"); err != nil {
		return err
	}
	mech := s.c.cfg.Auth
	if mech == MechanismAuto {
		switch {
		case s.smt.SupportsAuth("PLAIN"):
			mech = MechanismPlain
		case s.smt.SupportsAuth("LOGIN"):
			mech = MechanismLogin
		default:
			return &Error{Op: "auth", Message: "upstream does not offer AUTH PLAIN or LOGIN", Err: ErrMechanismNotOffered}
		}
	} else if name := strings.ToUpper(string(mech)); !s.smt.SupportsAuth(name) {
		return &Error{Op: "auth", Message: "upstream does not offer AUTH " + name, Err: ErrMechanismNotOffered}
	}

	client, sensitive := saslClient(mech, s.c.cfg.Username, secret)
	err := s.smt.Auth(client)
	if err == nil {
		return nil
	}
	e := newError(ctx, "auth", err)
	e.Message = scrub(e.Message, sensitive)
	if e.Err != nil {
		e.Err = &scrubbedError{msg: scrub(e.Err.Error(), sensitive), err: e.Err}
	}
	if e.Code >= 500 {
		rejected := fmt.Errorf("%w for user %s (AUTH %s)", ErrAuthRejected, s.c.cfg.Username, strings.ToUpper(string(mech)))
		if x, ok := client.(*xoauth2Client); ok && len(x.serverError) > 0 {
			rejected = fmt.Errorf("%w; server said %s", rejected, scrub(string(x.serverError), sensitive))
		}
		if x, ok := client.(*oauthBearerClient); ok && len(x.serverError) > 0 {
			rejected = fmt.Errorf("%w; server said %s", rejected, scrub(string(x.serverError), sensitive))
		}
		e.Err = rejected
	}
	return e
}

// quitTimeout bounds the wait for the reply to QUIT, which only matters
// for politeness: the message is already delivered.
const quitTimeout = 10 * time.Second

func (s *session) quit() {
	if s.broken {
		return
	}
	if s.w != nil {
		s.quitTransactions()
		return
	}
	if s.smt != nil {
		// go-smtp sets its own deadline per command, so shorten that rather
		// than wait minutes for a courtesy reply.
		s.smt.CommandTimeout = quitTimeout
		_ = s.smt.Quit()
	}
}

func (s *session) close() { s.raw.Close() }

func (s *session) tlsInfo() (version, cipher string) {
	if s.tls == nil {
		return "", ""
	}
	st := s.tls.ConnectionState()
	if !st.HandshakeComplete {
		return "", ""
	}
	return strings.ReplaceAll(tls.VersionName(st.Version), " ", ""), tls.CipherSuiteName(st.CipherSuite)
}

// readErrorReader remembers a read error so send can tell a failing body
// source from a failing connection.
type readErrorReader struct {
	r   io.Reader
	err error
}

func (r *readErrorReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// greetedConn serves a canned greeting before the connection's own data.
type greetedConn struct {
	net.Conn
	greeting []byte
}

func (g *greetedConn) Read(p []byte) (int, error) {
	if len(g.greeting) > 0 {
		n := copy(p, g.greeting)
		g.greeting = g.greeting[n:]
		return n, nil
	}
	return g.Conn.Read(p)
}
