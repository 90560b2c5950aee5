package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"regexp"
	"slices"
	"strings"
	"time"

	"sealpost/spool"
)

// Bounces: when a message is given up for some recipients (a 5xx from the
// upstream, or spool.max_age), its envelope sender gets a delivery status
// notification (RFC 3464) through the same upstream. The DSN is queued in
// the spool like any message, so it survives a crash, and has the null
// sender (MAIL FROM:<>), so a DSN that cannot be delivered is never
// bounced in turn.
//
// Its From is MAILER-DAEMON at the first DKIM domain when keys are
// configured — so the DSN is signed and its From domain is one the
// upstream lets this relay send as — else at the relay's hostname.

// maxBounceHeader bounds the original header quoted in a DSN.
const maxBounceHeader = 64 << 10

func (r *Relay) bounce(e spool.Event) {
	if !r.cfg.Spool.Bounce || e.Envelope.From == "" || len(e.Rcpts) == 0 {
		return
	}
	err := r.queueBounce(e)
	if err != nil {
		// Not fatal to the original message, which stays in failed/ with
		// its reason; the operator sees both here and in `queue show`.
		r.log.Error("bounce: could not queue the delivery status notification", slog.String("queue_id", string(e.ID)), slog.String("mail_from", e.Envelope.From), slog.Any("err", err))
	}
}

func (r *Relay) queueBounce(e spool.Event) error {
	m, body, _, err := r.spool.Lookup(e.ID)
	if err != nil {
		return err
	}
	header, err := readHeaderBlock(body, maxBounceHeader)
	body.Close()
	if err != nil {
		return fmt.Errorf("reading the original header: %w", err)
	}
	failed := make([]dsnRecipient, 0, len(e.Rcpts))
	for _, addr := range e.Rcpts {
		rc := dsnRecipient{Addr: addr, Expired: e.Kind == spool.EventExpired}
		for _, mr := range m.Rcpts {
			if mr.Addr == addr {
				rc.Reply = mr.LastReply
			}
		}
		failed = append(failed, rc)
	}
	live := r.live.Load()
	fromDomain := r.cfg.Hostname
	if live.dkim != nil {
		if ds := live.dkim.domains(); len(ds) > 0 {
			fromDomain = ds[0]
		}
	}
	now := time.Now()
	msg := buildDSN(dsnInput{
		ReportingMTA: r.cfg.Hostname,
		From:         "MAILER-DAEMON@" + fromDomain,
		To:           m.Envelope.From,
		QueueID:      string(m.ID),
		Arrival:      m.Envelope.Received,
		Now:          now,
		Recipients:   failed,
		Header:       header,
	})

	var sig []byte
	if live.dkim != nil {
		sg, err := live.dkim.newSigning(domainOf(msg.from), msg.fields, now)
		if err != nil {
			return fmt.Errorf("dkim: %w", err)
		}
		if sg != nil {
			if _, err := sg.Write(msg.data); err != nil {
				sg.Abort()
				return err
			}
			if sig, err = sg.Finish(); err != nil {
				return err
			}
		}
	}
	id := r.spool.NewID()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env := spool.Envelope{From: "", To: []string{m.Envelope.From}, MessageID: msg.messageID, ClientAddr: "bounce"}
	if err := r.spool.PutID(ctx, id, env, bytes.NewReader(msg.data), func() ([]byte, error) { return sig, nil }); err != nil {
		return err
	}
	r.audit.record("bounced",
		slog.String("queue_id", string(id)),
		slog.String("original_id", string(m.ID)),
		slog.String("mail_from", ""),
		slog.Any("rcpt", []string{m.Envelope.From}),
		slog.Any("failed_rcpt", e.Rcpts),
		slog.String("dkim", dsnSignature(sig, msg.from)))
	return nil
}

// dsnSignature says in the audit record's terms how the notification was
// signed: "d=domain", or "" when no key applies.
func dsnSignature(sig []byte, from string) string {
	if len(sig) == 0 {
		return ""
	}
	return "d=" + domainOf(from)
}

func domainOf(addr string) string {
	_, d, _ := strings.Cut(addr, "@")
	return strings.ToLower(d)
}

// readHeaderBlock returns the header of a message (without the blank
// line), cut at limit bytes on a line boundary.
func readHeaderBlock(r io.Reader, limit int) ([]byte, error) {
	br := bufio.NewReader(io.LimitReader(r, int64(limit)))
	var out bytes.Buffer
	for {
		line, err := br.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		if len(line) == 0 || line[len(line)-1] != '\n' || string(line) == "\r\n" || string(line) == "\n" {
			// End of header, of the message, or of the limit (a partial
			// line is dropped).
			return out.Bytes(), nil
		}
		out.Write(line)
	}
}

type dsnRecipient struct {
	Addr    string
	Reply   string // the upstream's last word, or the expiry note
	Expired bool
}

type dsnInput struct {
	ReportingMTA string
	From, To     string
	QueueID      string
	Arrival, Now time.Time
	Recipients   []dsnRecipient
	Header       []byte // the original header block, CRLF lines
}

type dsnMessage struct {
	data      []byte
	fields    []string // header field names, for DKIM's field list
	from      string
	messageID string
}

var enhancedCode = regexp.MustCompile(`\b([245])\.(\d{1,3})\.(\d{1,3})\b`)

// dsnStatus is the RFC 3463 status of one failed recipient.
func dsnStatus(rc dsnRecipient) string {
	if rc.Expired {
		return "4.4.7" // delivery time expired
	}
	if m := enhancedCode.FindString(rc.Reply); m != "" && m[0] == '5' {
		return m
	}
	return "5.0.0"
}

// oneLine makes untrusted text (an upstream reply) safe as a header value.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 900 {
		s = s[:900]
	}
	return strings.TrimSpace(s)
}

// buildDSN writes a multipart/report; report-type=delivery-status message
// (RFC 3464/6522): a human-readable part, the machine-readable
// message/delivery-status, and the original header as text/rfc822-headers.
func buildDSN(in dsnInput) dsnMessage {
	var rnd [12]byte
	rand.Read(rnd[:])
	tag := hex.EncodeToString(rnd[:])
	boundary := "sealpost-dsn-" + tag
	msgID := fmt.Sprintf("<%s.dsn.%s@%s>", tag, in.QueueID, in.ReportingMTA)

	var b bytes.Buffer
	crlf := func(format string, args ...any) { fmt.Fprintf(&b, format+"\r\n", args...) }
	fields := []string{"From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", "MIME-Version", "Content-Type"}
	crlf("From: Mail Delivery System <%s>", in.From)
	crlf("To: <%s>", in.To)
	crlf("Subject: %s", mime.QEncoding.Encode("utf-8", "Undelivered Mail Returned to Sender"))
	crlf("Date: %s", in.Now.Format(time.RFC1123Z))
	crlf("Message-ID: %s", msgID)
	crlf("Auto-Submitted: auto-replied") // RFC 3834: no auto-responder answers this
	crlf("MIME-Version: 1.0")
	crlf("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"", boundary)
	crlf("")
	crlf("This is a MIME-encapsulated message.")
	crlf("")

	crlf("--%s", boundary)
	crlf("Content-Type: text/plain; charset=utf-8")
	crlf("")
	crlf("This is the mail relay %s.", in.ReportingMTA)
	crlf("")
	crlf("Your message (queue id %s) could not be delivered to the following", in.QueueID)
	crlf("recipients. It has been given up; nothing more will be tried.")
	crlf("")
	for _, rc := range in.Recipients {
		crlf("  <%s>: %s", oneLine(rc.Addr), oneLine(rc.Reply))
	}
	crlf("")
	crlf("The header of your message is attached.")
	crlf("")

	crlf("--%s", boundary)
	crlf("Content-Type: message/delivery-status")
	crlf("")
	crlf("Reporting-MTA: dns; %s", in.ReportingMTA)
	crlf("X-Sealpost-Queue-ID: %s", in.QueueID)
	if !in.Arrival.IsZero() {
		crlf("Arrival-Date: %s", in.Arrival.Format(time.RFC1123Z))
	}
	for _, rc := range in.Recipients {
		crlf("")
		crlf("Final-Recipient: rfc822; %s", oneLine(rc.Addr))
		crlf("Action: failed")
		crlf("Status: %s", dsnStatus(rc))
		if rc.Reply != "" {
			crlf("Diagnostic-Code: smtp; %s", oneLine(rc.Reply))
		}
		crlf("Last-Attempt-Date: %s", in.Now.Format(time.RFC1123Z))
	}
	crlf("")

	crlf("--%s", boundary)
	crlf("Content-Type: text/rfc822-headers")
	crlf("")
	b.Write(normalizeCRLF(in.Header))
	crlf("")
	crlf("--%s--", boundary)
	return dsnMessage{data: b.Bytes(), fields: slices.Clone(fields), from: in.From, messageID: msgID}
}

// normalizeCRLF makes every line end in CRLF (the stored header already
// does; this guards the DSN against anything else).
func normalizeCRLF(h []byte) []byte {
	var out bytes.Buffer
	for _, line := range bytes.SplitAfter(h, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		line = bytes.TrimRight(line, "\r\n")
		out.Write(line)
		out.WriteString("\r\n")
	}
	return out.Bytes()
}
