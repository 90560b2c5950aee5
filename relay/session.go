package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"sealpost/policy"
	"sealpost/spool"
)

// session is one client connection's SMTP transaction state.
type session struct {
	r        *Relay
	conn     *smtp.Conn
	clientIP netip.Addr
	// clientAddr is clientIP as the log, the limits and the spool write it,
	// made once rather than at every command.
	clientAddr string
	peer       peer // the local user and program, when the kernel says

	from     string
	smtputf8 bool
	rcpts    []string
}

func (r *Relay) newSession(c *smtp.Conn) (smtp.Session, error) {
	ip := clientIP(c.Conn().RemoteAddr())
	return &session{r: r, conn: c, clientIP: ip, clientAddr: addrString(ip), peer: peerOf(c.Conn())}, nil
}

func (s *session) Reset() {
	s.from, s.smtputf8, s.rcpts = "", false, nil
}

func (s *session) Logout() error { return nil }

// Mail checks the sender before anything is read: address syntax, the
// allowed senders, then the rate limits (last, so a refused sender does not
// use up tokens).
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.Reset()
	if bareLineEnding(s.conn.Conn()) {
		return s.refuseBareLineEnding(from)
	}
	live := s.r.live.Load()
	smtputf8 := opts != nil && opts.UTF8
	if v := policy.CheckEnvelopeAddress(from, smtputf8, true); v != nil {
		return s.refuse(v, replyBadSender(v), from, nil)
	}
	if v := live.rules.CheckEnvelopeSender(from); v != nil {
		if err := s.enforce(live, v, from, nil); err != nil {
			return err
		}
	}
	if err := live.limits.allow(s.senderKey(from), s.peer.localUser(), s.clientKey()); err != nil {
		s.r.audit.record("rejected", append([]slog.Attr{
			slog.String("client_ip", s.clientAddr),
			slog.String("mail_from", from),
			slog.String("rule", err.rule),
			slog.String("reply", smtpErrorString(err.reply))}, s.peer.attrs()...)...)
		return err.reply
	}
	s.from, s.smtputf8 = from, smtputf8
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if v := policy.CheckEnvelopeAddress(to, s.smtputf8, false); v != nil {
		return s.refuse(v, replyBadRecipient(v), s.from, []string{to})
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}

// senderKey is whom the per-sender limit counts: the envelope sender,
// lowercased so case games do not buy a fresh bucket.
func (s *session) senderKey(from string) string {
	if from == "" {
		return "<>"
	}
	return strings.ToLower(from)
}

func (s *session) clientKey() string { return s.clientAddr }

// Data runs the pipeline of one message: check line endings (all along) and
// the header, edit the header, DKIM-sign, and stream it into the spool.
// Only when the spool says the message is durable does the client get 250;
// every failure before that is a reply that makes the client keep the
// message.
func (s *session) Data(r io.Reader) error {
	start := time.Now()
	if bareLineEnding(s.conn.Conn()) {
		return s.refuseBareLineEnding(s.from)
	}
	deadline := start.Add(time.Duration(s.r.cfg.Listen.DataTimeout))
	_ = s.conn.Conn().SetReadDeadline(deadline)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()

	live := s.r.live.Load()
	counted := &countingReader{r: r}
	br := s.r.dataReader(policy.NewLineChecker(counted))
	// PutID has read what it needs by the time Data returns.
	defer s.r.releaseDataReader(br)
	h, err := policy.ReadHeader(br, policy.HeaderOptions{SMTPUTF8: s.smtputf8})
	if err != nil {
		return s.dataFailed(err, counted.n)
	}
	if v := policy.CheckHeader(h); v != nil {
		if err := s.enforce(live, v, s.from, s.rcpts); err != nil {
			return err
		}
	}
	if v := live.rules.CheckFromDomains(h); v != nil {
		if err := s.enforce(live, v, s.from, s.rcpts); err != nil {
			return err
		}
	}

	id := s.r.spool.NewID()
	// Gives back the file made ready for the message if it is refused
	// before it is stored; nothing once PutID has been called.
	defer s.r.spool.DiscardID(id)
	messageID := s.editHeader(h, id, start)
	s.rewriteHeader(live, h) // before signing: the signature covers the new From
	signer, err := signerFor(live, h, start)
	if err != nil {
		return s.dataFailed(err, counted.n)
	}
	if signer != nil {
		// Releases go-msgauth's goroutines when the message is not stored;
		// a no-op after Finish.
		defer signer.Abort()
	}

	var head bytes.Buffer
	if _, err := h.WriteTo(&head); err != nil {
		return s.dataFailed(err, counted.n)
	}
	body := io.MultiReader(&head, br)
	if signer != nil {
		body = io.TeeReader(body, signer)
	}
	env := spool.Envelope{
		From:       s.from,
		To:         append([]string(nil), s.rcpts...),
		SMTPUTF8:   s.smtputf8,
		ClientAddr: s.clientAddr,
		LocalUser:  s.peer.localUser(),
		TLS:        s.tlsVersion(),
		MessageID:  messageID,
		Received:   start,
	}
	prefix := func() ([]byte, error) {
		// The whole message has been read: last chance to refuse it for
		// what only the raw stream showed.
		if bareLineEnding(s.conn.Conn()) {
			return nil, bareLineEndingViolation
		}
		fields := []byte(s.receivedField(id, start))
		if signer != nil {
			sig, err := signer.Finish()
			if err != nil {
				return nil, fmt.Errorf("dkim: %w", err)
			}
			fields = append(fields, sig...)
		}
		return fields, nil
	}
	if err := s.r.spool.PutID(ctx, id, env, body, prefix); err != nil {
		return s.dataFailed(err, counted.n)
	}
	attrs := []slog.Attr{
		slog.String("queue_id", string(id)),
		slog.String("client_ip", env.ClientAddr),
		slog.String("helo", s.conn.Hostname()),
		slog.String("mail_from", s.from),
		slog.Any("rcpt", env.To),
		slog.Int64("size", counted.n),
		slog.String("message_id", messageID),
		slog.String("tls", env.TLS),
		slog.Int64("duration_ms", time.Since(start).Milliseconds()),
	}
	attrs = append(attrs, s.peer.attrs()...)
	if signer != nil {
		attrs = append(attrs, slog.String("dkim", signer.Summary()))
	}
	s.r.audit.record("received", attrs...)
	return replyQueued(string(id))
}

func (r *Relay) dataReader(src io.Reader) *bufio.Reader {
	if br, ok := r.dataReaders.Get().(*bufio.Reader); ok {
		br.Reset(src)
		return br
	}
	return bufio.NewReaderSize(src, 32<<10)
}

func (r *Relay) releaseDataReader(br *bufio.Reader) {
	br.Reset(nil) // drop the connection's reader
	r.dataReaders.Put(br)
}

// editHeader makes the header fit to leave the host: Bcc never leaves it
// (the recipients are in the envelope), and Date and Message-ID are added
// when the program left them out, as RFC 5322 requires them. It returns the
// message's Message-ID.
func (s *session) editHeader(h *policy.Header, id spool.ID, now time.Time) string {
	h.Del("Bcc")
	if !h.Has("Date") {
		h.Add("Date", now.Format(time.RFC1123Z))
	}
	messageID, ok := h.Get("Message-ID")
	if !ok {
		messageID = "<" + string(id) + "@" + s.r.cfg.Hostname + ">"
		h.Add("Message-ID", messageID)
	}
	return messageID
}

// enforce applies a broken message or sender rule: in enforce mode it
// returns the refusal, in report mode it records what would have been
// refused and lets the message through. Line endings are never only
// reported (see PolicyConfig.Mode).
func (s *session) enforce(live *livePolicy, v *policy.Violation, from string, rcpts []string) error {
	reply := violationReply(v)
	if live.mode == "report" && !alwaysEnforced(v.Rule) {
		s.r.audit.record("flagged",
			slog.String("client_ip", s.clientAddr),
			slog.String("mail_from", from),
			slog.Any("rcpt", rcpts),
			slog.String("rule", v.Rule),
			slog.String("reason", v.Error()),
			slog.String("reply", "would be "+smtpErrorString(reply)))
		return nil
	}
	return s.refuse(v, reply, from, rcpts)
}

// refuse records a refusal and returns the reply for it.
func (s *session) refuse(v *policy.Violation, reply *smtp.SMTPError, from string, rcpts []string) error {
	attrs := []slog.Attr{
		slog.String("client_ip", s.clientAddr),
		slog.String("mail_from", from),
		slog.String("rule", v.Rule),
		slog.String("reason", v.Error()),
		slog.String("reply", smtpErrorString(reply)),
	}
	if rcpts != nil {
		attrs = append(attrs, slog.Any("rcpt", rcpts))
	}
	attrs = append(attrs, s.peer.attrs()...)
	s.r.audit.record("rejected", attrs...)
	return reply
}

var bareLineEndingViolation = &policy.Violation{Rule: ruleBareLineEnding, Msg: "a line on this connection ended in a bare CR or LF; only CRLF ends a line in SMTP"}

// refuseBareLineEnding refuses and hangs up: after a bare CR or LF the
// client and the relay may disagree on where commands and messages end,
// which is what SMTP smuggling exploits.
func (s *session) refuseBareLineEnding(from string) error {
	hangUpAfterReply(s.conn.Conn())
	return s.refuse(bareLineEndingViolation, violationReply(bareLineEndingViolation), from, s.rcpts)
}

// dataFailed turns any failure during DATA into its reply and one audit
// record: a rule the message broke, or trouble on our side (spool, signing).
func (s *session) dataFailed(err error, size int64) error {
	if bareLineEnding(s.conn.Conn()) {
		// Whatever the read ended with (often the deadline the watch set),
		// the cause is the broken line ending.
		return s.refuseBareLineEnding(s.from)
	}
	var v *policy.Violation
	if errors.As(err, &v) {
		if alwaysEnforced(v.Rule) {
			// Broken line endings mid-DATA: where the message ends can no
			// longer be trusted, so the connection ends with the reply.
			hangUpAfterReply(s.conn.Conn())
		}
		return s.refuse(v, violationReply(v), s.from, s.rcpts)
	}
	reply, rule := dataOutcome(err)
	if reply == replyTimeout {
		hangUpAfterReply(s.conn.Conn())
	}
	if rule == "spool" || rule == "dkim" {
		s.r.log.Warn("message not accepted", slog.String("client_ip", s.clientAddr), slog.String("mail_from", s.from), slog.Any("err", err))
	}
	s.r.audit.record("rejected",
		slog.String("client_ip", s.clientAddr),
		slog.String("mail_from", s.from),
		slog.Any("rcpt", s.rcpts),
		slog.Int64("size", size),
		slog.String("rule", rule),
		slog.String("reply", smtpErrorString(reply)))
	return reply
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
	from = "(" + from + ")"
	if who := s.peer.comment(); who != "" {
		from += " " + who // the local sender, like Postfix's "from userid N"
	}
	return fmt.Sprintf("Received: from %s %s\r\n\tby %s (sealpost) with %s id %s;\r\n\t%s\r\n",
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
