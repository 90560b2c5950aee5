package relay

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"sealpost/spool"
)

// session is one client connection's SMTP transaction state.
type session struct {
	r        *Relay
	conn     *smtp.Conn
	clientIP netip.Addr

	from     string
	smtputf8 bool
	rcpts    []string
}

func (r *Relay) newSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{r: r, conn: c, clientIP: clientIP(c.Conn().RemoteAddr())}, nil
}

func (s *session) Reset() {
	s.from, s.smtputf8, s.rcpts = "", false, nil
}

func (s *session) Logout() error { return nil }

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.Reset()
	s.from = from
	if opts != nil {
		s.smtputf8 = opts.UTF8
	}
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.rcpts = append(s.rcpts, to)
	return nil
}

// Data runs the pipeline of one message: read it (bounded by size and
// time), add the Received field, and put it in the spool. Only when the
// spool says the message is durable does the client get 250; every failure
// before that is a reply that makes the client keep the message.
func (s *session) Data(r io.Reader) error {
	start := time.Now()
	deadline := start.Add(time.Duration(s.r.cfg.Listen.DataTimeout))
	_ = s.conn.Conn().SetReadDeadline(deadline)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()

	id := s.r.spool.NewID()
	env := spool.Envelope{
		From:       s.from,
		To:         append([]string(nil), s.rcpts...),
		SMTPUTF8:   s.smtputf8,
		ClientAddr: addrString(s.clientIP),
		TLS:        s.tlsVersion(),
		Received:   start,
	}
	counted := &countingReader{r: r}
	header := func() ([]byte, error) { return []byte(s.receivedField(id, start)), nil }
	err := s.r.spool.PutID(ctx, id, env, counted, header)
	reply := dataReply(err)
	if reply != nil {
		s.r.log.Warn("message not accepted", slog.String("client_ip", env.ClientAddr), slog.String("mail_from", s.from), slog.Any("err", err))
		s.r.audit.record("rejected",
			slog.String("client_ip", env.ClientAddr),
			slog.String("mail_from", s.from),
			slog.Any("rcpt", env.To),
			slog.Int64("size", counted.n),
			slog.String("rule", "spool"),
			slog.String("reply", smtpErrorString(reply)))
		return reply
	}
	s.r.audit.record("received",
		slog.String("queue_id", string(id)),
		slog.String("client_ip", env.ClientAddr),
		slog.String("helo", s.conn.Hostname()),
		slog.String("mail_from", s.from),
		slog.Any("rcpt", env.To),
		slog.Int64("size", counted.n),
		slog.String("tls", env.TLS),
		slog.Int64("duration_ms", time.Since(start).Milliseconds()))
	return replyQueued(string(id))
}

func (s *session) tlsVersion() string {
	state, ok := s.conn.TLSConnectionState()
	if !ok {
		return ""
	}
	return tlsVersionName(state.Version)
}

func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS12:
		return "TLS1.2"
	case tls.VersionTLS13:
		return "TLS1.3"
	case 0:
		return ""
	}
	return tls.VersionName(v)
}

// receivedField records where the message came from (RFC 5321 §4.4), with
// the protocol keyword of RFC 3848 so the TLS state is visible downstream.
func (s *session) receivedField(id spool.ID, now time.Time) string {
	proto := "ESMTP"
	if s.tlsVersion() != "" {
		proto = "ESMTPS"
	}
	if s.smtputf8 {
		proto = "UTF8SMTP" + strings.TrimPrefix(proto, "ESMTP") // RFC 6531 §3.7.7
	}
	from := "local"
	if s.clientIP.IsValid() {
		from = "[" + s.clientIP.String() + "]"
	}
	helo := sanitizeHeaderText(s.conn.Hostname())
	return fmt.Sprintf("Received: from %s (%s)\r\n\tby %s (sealpost) with %s id %s;\r\n\t%s\r\n",
		helo, from, s.r.cfg.Hostname, proto, id, now.Format(time.RFC1123Z))
}

// sanitizeHeaderText keeps a client-supplied word (the HELO name) from
// breaking the header it is written into.
func sanitizeHeaderText(s string) string {
	if s == "" {
		return "unknown"
	}
	var b strings.Builder
	for _, c := range s {
		if c > ' ' && c < 0x7f && c != '(' && c != ')' && c != ';' {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
		if b.Len() >= 255 {
			break
		}
	}
	return b.String()
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
