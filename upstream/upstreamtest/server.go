// Package upstreamtest runs an in-process SMTP server standing in for the
// upstream provider: STARTTLS on or off, implicit TLS, chosen certificates,
// AUTH PLAIN/LOGIN/XOAUTH2 with known users, and settable replies per
// command. It records everything it saw, including whether TLS was up when
// each command arrived, so tests can assert that no credential and no mail
// ever crossed the wire in the clear.
//
// It listens on 127.0.0.1 only. New is for tests; NewServer and Close are
// for `sealpost demo`, which runs it as its embedded upstream.
package upstreamtest

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// TLSMode says how the server offers TLS.
type TLSMode int

const (
	TLSNone     TLSMode = iota // plaintext only; STARTTLS not advertised
	TLSStartTLS                // STARTTLS advertised (port 587 style)
	TLSImplicit                // TLS from the first byte (port 465 style)
)

func (m TLSMode) String() string {
	switch m {
	case TLSNone:
		return "none"
	case TLSStartTLS:
		return "starttls"
	case TLSImplicit:
		return "implicit"
	}
	return fmt.Sprintf("TLSMode(%d)", int(m))
}

// Options configure a Server. The zero value is a plaintext server that
// accepts any mail without AUTH.
type Options struct {
	TLS TLSMode
	// Certificate the server presents; required unless TLS is TLSNone.
	Certificate tls.Certificate
	// MaxTLSVersion caps the versions the server speaks (0 = crypto/tls
	// default). Below TLS 1.2 the server also allows TLS 1.0, to play an
	// outdated upstream.
	MaxTLSVersion uint16

	// AdvertiseAuth offers AUTH even without TLS, to check that the
	// client never takes the bait.
	AdvertiseAuth bool
	// Users are accepted by PLAIN and LOGIN (user → password).
	Users map[string]string
	// Tokens are accepted by XOAUTH2 (user → access token).
	Tokens map[string]string
	// Mechanisms overrides the advertised SASL mechanisms (e.g. only
	// "LOGIN"). Default: PLAIN and LOGIN when Users is set or AdvertiseAuth
	// is on, XOAUTH2 when Tokens is set. When any credentials are
	// configured, MAIL without AUTH is refused with 530.
	Mechanisms []string

	// MailReply, if set, is returned to every MAIL.
	MailReply *smtp.SMTPError
	// RcptReply, if set, decides each RCPT; nil from it accepts.
	RcptReply func(addr string) *smtp.SMTPError
	// DataReply, if set, is returned after the body is read; the message
	// is then not recorded.
	DataReply *smtp.SMTPError

	// Domain is the server's name in its greeting; default "upstream.test".
	Domain string
	// MaxMessageBytes is advertised as SIZE and enforced (0 = unlimited).
	MaxMessageBytes int64
	// SMTPUTF8 advertises the SMTPUTF8 extension.
	SMTPUTF8 bool

	// OnMessage is called (from the connection's goroutine) for each
	// message accepted; `sealpost demo` prints them.
	OnMessage func(Received)
	// ErrorLog receives go-smtp's internal errors; default: discarded.
	ErrorLog *log.Logger
}

// Received is one accepted message.
type Received struct {
	From       string
	To         []string
	Data       []byte
	TLSVersion uint16 // 0 when the message came in the clear
	AuthUser   string
	// AuthMechanism is "PLAIN", "LOGIN" or "XOAUTH2"; empty without AUTH.
	AuthMechanism string
	SMTPUTF8      bool
	Size          int64 // SIZE= declared by the client
}

// Command is one client command as the server saw it.
//
// While the connection is in plaintext every command line is recorded
// (SASL responses and message bodies are not commands and are skipped).
// Once TLS is up the server records what reaches the session: EHLO, AUTH,
// MAIL, RCPT and DATA; commands go-smtp answers by itself over TLS (RSET,
// NOOP, QUIT, unknown verbs) are not listed.
type Command struct {
	Conn int    // connection number, from 1
	Verb string // upper case, e.g. "EHLO", "STARTTLS", "AUTH"
	Arg  string // for AUTH, the mechanism only; for MAIL/RCPT the argument
	TLS  bool   // TLS was up when the command arrived
}

// Server is a running test upstream.
type Server struct {
	opts Options
	ln   net.Listener
	smtp *smtp.Server
	done chan struct{}

	mu       sync.Mutex
	conns    int
	commands []Command
	messages []Received
	changed  chan struct{} // closed and replaced whenever messages grows

	tokens map[string]string // SetToken's replacements for Options.Tokens
}

// NewServer starts a server on 127.0.0.1 with a free port.
func NewServer(opts Options) (*Server, error) {
	if opts.TLS != TLSNone && len(opts.Certificate.Certificate) == 0 {
		return nil, errors.New("upstreamtest: Options.Certificate is required when TLS is on")
	}
	if opts.Domain == "" {
		opts.Domain = "upstream.test"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("upstreamtest: %w", err)
	}
	s := &Server{opts: opts, done: make(chan struct{}), changed: make(chan struct{})}

	var tlsConfig *tls.Config
	if opts.TLS != TLSNone {
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{opts.Certificate}, MaxVersion: opts.MaxTLSVersion}
		if opts.MaxTLSVersion != 0 && opts.MaxTLSVersion < tls.VersionTLS12 {
			tlsConfig.MinVersion = tls.VersionTLS10
		}
	}

	srv := smtp.NewServer(backend{s})
	srv.Domain = opts.Domain
	srv.MaxMessageBytes = opts.MaxMessageBytes
	srv.EnableSMTPUTF8 = opts.SMTPUTF8
	srv.AllowInsecureAuth = opts.AdvertiseAuth
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	// A nil *log.Logger in the interface field would not be nil.
	srv.ErrorLog = log.New(io.Discard, "", 0)
	if opts.ErrorLog != nil {
		srv.ErrorLog = opts.ErrorLog
	}

	var l net.Listener = &sniffListener{Listener: ln, s: s, tlsFromStart: opts.TLS == TLSImplicit}
	switch opts.TLS {
	case TLSStartTLS:
		srv.TLSConfig = tlsConfig
	case TLSImplicit:
		l = tls.NewListener(l, tlsConfig)
	}
	s.ln, s.smtp = ln, srv
	go func() {
		defer close(s.done)
		_ = srv.Serve(l)
	}()
	return s, nil
}

// Addr is the host:port the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server and drops its connections.
func (s *Server) Close() error {
	err := s.smtp.Close()
	// go-smtp only closes listeners Serve has registered; if Close comes
	// before the Serve goroutine got that far, closing ours unblocks it.
	s.ln.Close()
	<-s.done
	return err
}

// Messages returns a copy of the messages accepted so far.
func (s *Server) Messages() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.messages...)
}

// Commands returns a copy of the commands seen so far, in arrival order.
func (s *Server) Commands() []Command {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Command(nil), s.commands...)
}

// WaitFor blocks until at least n messages were accepted or ctx ends, and
// returns the messages accepted so far.
func (s *Server) WaitFor(ctx context.Context, n int) ([]Received, error) {
	for {
		s.mu.Lock()
		changed := s.changed
		if len(s.messages) >= n {
			// Copied once, when there are enough: a benchmark waiting
			// for thousands would otherwise copy them all at each.
			msgs := append([]Received(nil), s.messages...)
			s.mu.Unlock()
			return msgs, nil
		}
		s.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			msgs := s.Messages()
			return msgs, fmt.Errorf("upstreamtest: got %d of %d messages: %w", len(msgs), n, ctx.Err())
		}
	}
}

func (s *Server) record(c Command) {
	s.mu.Lock()
	s.commands = append(s.commands, c)
	s.mu.Unlock()
}

func (s *Server) newConnID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns++
	return s.conns
}

func (s *Server) deliver(r Received) {
	s.mu.Lock()
	s.messages = append(s.messages, r)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	if s.opts.OnMessage != nil {
		s.opts.OnMessage(r)
	}
}

func (s *Server) mechanisms() []string {
	if s.opts.Mechanisms != nil {
		return s.opts.Mechanisms
	}
	var m []string
	if s.opts.Users != nil || s.opts.AdvertiseAuth {
		m = append(m, sasl.Plain, sasl.Login)
	}
	if s.opts.Tokens != nil {
		m = append(m, "XOAUTH2", "OAUTHBEARER")
	}
	return m
}

func (s *Server) authRequired() bool {
	return len(s.opts.Users) > 0 || len(s.opts.Tokens) > 0
}

// sniffListener wraps accepted connections so the plaintext part of each
// dialogue can be recorded below go-smtp, which exposes no hook for it.
type sniffListener struct {
	net.Listener
	s            *Server
	tlsFromStart bool
}

func (l *sniffListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sniffConn{Conn: c, s: l.s, id: l.s.newConnID(), encrypted: l.tlsFromStart}, nil
}

// sniffConn parses client lines while the connection is in plaintext. It
// follows the server's replies to know when a line is a SASL response
// (after 334) or message body (after 354) rather than a command.
type sniffConn struct {
	net.Conn
	s  *Server
	id int

	mu        sync.Mutex
	encrypted bool
	in        []byte // partial client line
	out       []byte // partial server line
	lastReply string
	inData    bool
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		c.client(p[:n])
		c.mu.Unlock()
	}
	return n, err
}

func (c *sniffConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.server(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *sniffConn) client(p []byte) {
	if c.encrypted {
		return
	}
	c.in = append(c.in, p...)
	for !c.encrypted {
		i := bytes.IndexByte(c.in, '\n')
		if i < 0 {
			return
		}
		line := strings.TrimRight(string(c.in[:i]), "\r")
		c.in = c.in[i+1:]
		switch {
		case c.inData:
			if line == "." {
				c.inData = false
			}
		case c.lastReply == "334":
			c.lastReply = "" // a SASL response, not a command
		default:
			verb, arg, _ := strings.Cut(line, " ")
			verb = strings.ToUpper(verb)
			if verb == "AUTH" {
				arg, _, _ = strings.Cut(arg, " ") // never record the initial response
			}
			c.s.record(Command{Conn: c.id, Verb: verb, Arg: arg})
			if verb == "STARTTLS" {
				// From here on the bytes are TLS records, and later
				// commands are recorded by the session.
				c.encrypted = true
				c.in = nil
			}
		}
	}
}

func (c *sniffConn) server(p []byte) {
	if c.encrypted {
		return
	}
	c.out = append(c.out, p...)
	for {
		i := bytes.IndexByte(c.out, '\n')
		if i < 0 {
			return
		}
		line := string(c.out[:i])
		c.out = c.out[i+1:]
		if len(line) >= 4 && line[3] == ' ' {
			c.lastReply = line[:3]
			if c.lastReply == "354" {
				c.inData = true
			}
		}
	}
}
