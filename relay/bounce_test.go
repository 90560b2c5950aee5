package relay

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"sealpost/certs/certstest"
	"sealpost/spool"
	"sealpost/upstream/upstreamtest"
)

// parsedDSN is a DSN taken apart with the standard library only, the way
// a mail client would.
type parsedDSN struct {
	header      mail.Header
	text        string
	perMessage  textproto.MIMEHeader
	perRcpt     []textproto.MIMEHeader
	origHeaders mail.Header
}

func parseDSN(t *testing.T, data []byte) parsedDSN {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("net/mail cannot read the DSN: %v\n%s", err, data)
	}
	mediaType, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mediaType != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type %q: %v", msg.Header.Get("Content-Type"), err)
	}
	var d parsedDSN
	d.header = msg.Header
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var types []string
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("multipart: %v", err)
		}
		body, _ := io.ReadAll(p)
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		types = append(types, ct)
		switch ct {
		case "text/plain":
			d.text = string(body)
		case "message/delivery-status":
			// RFC 3464: groups of fields separated by blank lines; the first
			// is per message, each further one per recipient.
			tr := textproto.NewReader(bufioReader(body))
			h, err := tr.ReadMIMEHeader()
			if err != nil {
				t.Fatalf("per-message fields: %v", err)
			}
			d.perMessage = h
			for {
				h, err := tr.ReadMIMEHeader()
				if len(h) > 0 {
					d.perRcpt = append(d.perRcpt, h)
				}
				if err != nil {
					break
				}
			}
		case "text/rfc822-headers":
			m, err := mail.ReadMessage(bytes.NewReader(append(body, "\r\n"...)))
			if err != nil {
				t.Fatalf("original headers do not parse: %v", err)
			}
			d.origHeaders = m.Header
		}
	}
	if strings.Join(types, ",") != "text/plain,message/delivery-status,text/rfc822-headers" {
		t.Errorf("parts %v", types)
	}
	return d
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

// TestPartialAcceptanceBouncesTheRefused: the upstream takes one recipient
// and refuses the other for good. The accepted one is delivered once and
// not retried; the refused one is finished and its sender gets a DSN,
// from the null sender, that net/mail and mime/multipart read back.
func TestPartialAcceptanceBouncesTheRefused(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	up := upstreamtest.New(t, upstreamtest.Options{
		TLS:         upstreamtest.TLSStartTLS,
		Certificate: certstest.Leaf(t, ca, "127.0.0.1", "localhost"),
		Users:       map[string]string{testUser: testPassword},
		RcptReply: func(addr string) *smtp.SMTPError {
			if addr == "gone@example.net" {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "mailbox unavailable"}
			}
			return nil
		},
	})
	cfg := newTestConfig(t, ca, up.Addr())
	env := startRelay(t, cfg, nil)
	reply, err := send(t, env.addr, "app@example.com", []string{"ops@example.net", "gone@example.net"}, testBody)
	if err != nil {
		t.Fatal(err)
	}
	id := queuedReply.FindStringSubmatch(reply)[1]

	msgs := up.Expect(t, 2)
	if msgs[0].From != "app@example.com" || strings.Join(msgs[0].To, ",") != "ops@example.net" {
		t.Fatalf("first message %q → %v", msgs[0].From, msgs[0].To)
	}
	dsn := msgs[1]
	if dsn.From != "" || strings.Join(dsn.To, ",") != "app@example.com" {
		t.Fatalf("DSN envelope %q → %v, want <> → app@example.com", dsn.From, dsn.To)
	}
	d := parseDSN(t, dsn.Data)
	if from, err := d.header.AddressList("From"); err != nil || !strings.HasPrefix(from[0].Address, "MAILER-DAEMON@") {
		t.Errorf("DSN From %v, %v", from, err)
	}
	if d.header.Get("Auto-Submitted") != "auto-replied" {
		t.Errorf("DSN lacks Auto-Submitted")
	}
	if d.perMessage.Get("Reporting-MTA") != "dns; relay.test" {
		t.Errorf("Reporting-MTA %q", d.perMessage.Get("Reporting-MTA"))
	}
	if len(d.perRcpt) != 1 {
		t.Fatalf("%d per-recipient groups, want 1: %v", len(d.perRcpt), d.perRcpt)
	}
	r := d.perRcpt[0]
	if r.Get("Final-Recipient") != "rfc822; gone@example.net" || r.Get("Action") != "failed" || r.Get("Status") != "5.1.1" ||
		!strings.Contains(r.Get("Diagnostic-Code"), "550") {
		t.Errorf("per-recipient fields %v", r)
	}
	if d.origHeaders.Get("Subject") != "disk almost full" || !strings.Contains(d.origHeaders.Get("Received"), id) {
		t.Errorf("original headers %v", d.origHeaders)
	}
	if !strings.Contains(d.text, "gone@example.net") {
		t.Errorf("human-readable part does not name the recipient:\n%s", d.text)
	}
	env.logs.waitRecord(t, "bounced", 1)
	env.stop()
	// The original sits in failed/ with each recipient's fate; the DSN is
	// delivered; nothing is left in the queue.
	assertQueueLen(t, cfg, 0)
	s, err := spool.Open(cfg.Spool.Dir, spool.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	fm, err := s.GetFailed(spool.ID(id))
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]spool.RcptState{}
	for _, r := range fm.Rcpts {
		states[r.Addr] = r.State
	}
	if states["ops@example.net"] != spool.Delivered || states["gone@example.net"] != spool.Failed {
		t.Errorf("recipient states %v", states)
	}
	if n := len(up.Messages()); n != 2 {
		t.Errorf("upstream got %d messages, want 2 (no retry of the accepted recipient)", n)
	}
}

// TestBounceNeverBounced: a message with the null sender that fails gets
// no DSN, and neither does any message with spool.bounce = false.
func TestBounceNeverBounced(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		from   string
		bounce bool
	}{
		{"null sender", "", true},
		{"bounce off", "app@example.com", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ca := certstest.NewCA(t)
			up := upstreamtest.New(t, upstreamtest.Options{
				TLS:         upstreamtest.TLSStartTLS,
				Certificate: certstest.Leaf(t, ca, "127.0.0.1", "localhost"),
				Users:       map[string]string{testUser: testPassword},
				RcptReply: func(string) *smtp.SMTPError {
					return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
				},
			})
			cfg := newTestConfig(t, ca, up.Addr())
			cfg.Spool.Bounce = tt.bounce
			env := startRelay(t, cfg, nil)
			if _, err := send(t, env.addr, tt.from, []string{"gone@example.net"}, testBody); err != nil {
				t.Fatal(err)
			}
			env.logs.waitRecord(t, "failed", 1)
			env.stop()
			if n := len(env.logs.records("bounced")); n != 0 {
				t.Errorf("%d bounces queued", n)
			}
			assertQueueLen(t, cfg, 0)
			for _, c := range up.Commands() {
				if c.Verb == "MAIL" && strings.HasPrefix(c.Arg, "FROM:<>") && tt.from != "" {
					t.Errorf("a DSN was sent: %v", c)
				}
			}
		})
	}
}

func TestBuildDSNExpired(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	m := buildDSN(dsnInput{
		ReportingMTA: "relay.test", From: "MAILER-DAEMON@example.com", To: "app@example.com", QueueID: "20260226T120000-abcdefghij",
		Arrival: now.Add(-5 * 24 * time.Hour), Now: now,
		Recipients: []dsnRecipient{{Addr: "slow@example.net", Reply: "expired after 120h0m0s: upstream rcpt: 451 4.3.0 try later\r\nInjected: x", Expired: true}},
		Header:     []byte("Subject: report\r\nFrom: app@example.com\r\n"),
	})
	d := parseDSN(t, m.data)
	r := d.perRcpt[0]
	if r.Get("Status") != "4.4.7" || r.Get("Action") != "failed" || r.Get("Injected") != "" {
		t.Errorf("expired recipient %v", r)
	}
	if d.perMessage.Get("Arrival-Date") == "" || d.origHeaders.Get("Subject") != "report" {
		t.Errorf("per-message %v, original %v", d.perMessage, d.origHeaders)
	}
}

// TestBounceIsQueuedDurably: the DSN goes through the spool (PutID), so a
// relay whose upstream is down keeps it queued like any message.
func TestBounceIsQueuedDurably(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	cfg := newTestConfig(t, ca, "127.0.0.1:1")
	r, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	id, err := r.spool.Put(context.Background(), spool.Envelope{From: "app@example.com", To: []string{"x@example.net"}}, strings.NewReader(testBody))
	if err != nil {
		t.Fatal(err)
	}
	r.bounce(spool.Event{Kind: spool.EventExpired, ID: id, Envelope: spool.Envelope{From: "app@example.com"}, Rcpts: []string{"x@example.net"}})
	l, _ := r.spool.List()
	var dsn *spool.Message
	for _, m := range l {
		if m.ID != id {
			dsn = m
		}
	}
	if len(l) != 2 || dsn.Envelope.From != "" || dsn.Envelope.To[0] != "app@example.com" {
		t.Fatalf("queue after bounce: %d messages", len(l))
	}
	body, _ := r.spool.OpenBody(dsn.ID)
	data, _ := io.ReadAll(body)
	body.Close()
	if d := parseDSN(t, data); d.perRcpt[0].Get("Status") != "4.4.7" {
		t.Errorf("status %q", d.perRcpt[0].Get("Status"))
	}
}
