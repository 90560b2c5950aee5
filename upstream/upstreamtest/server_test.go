package upstreamtest_test

import (
	"context"
	"crypto/tls"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"sealpost/certs/certstest"
	"sealpost/upstream/upstreamtest"
)

const body = "Subject: t\r\n\r\nMAIL FROM:<body@example.com>\r\nAUTH PLAIN Zm9v\r\n..dot\r\n"

// TestRecordsPlaintextDialogue checks the sniffer: commands sent in the
// clear are recorded with TLS=false, while SASL responses and body lines
// that look like commands are not.
func TestRecordsPlaintextDialogue(t *testing.T) {
	t.Parallel()
	var (
		mu  sync.Mutex
		got []upstreamtest.Received
	)
	srv := upstreamtest.New(t, upstreamtest.Options{
		AdvertiseAuth: true,
		Users:         map[string]string{"u": "p"},
		OnMessage: func(r upstreamtest.Received) {
			mu.Lock()
			got = append(got, r)
			mu.Unlock()
		},
	})
	c, err := smtp.Dial(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewLoginClient("u", "p")); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("a@example.com", []string{"b@example.org"}, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	c.Quit()

	msgs := srv.Expect(t, 1)
	if string(msgs[0].Data) != body || msgs[0].AuthUser != "u" || msgs[0].AuthMechanism != "LOGIN" || msgs[0].TLSVersion != 0 {
		t.Errorf("received %+v", msgs[0])
	}
	var verbs []string
	for _, cmd := range srv.Commands() {
		if cmd.TLS || cmd.Conn != 1 {
			t.Errorf("command %+v", cmd)
		}
		verbs = append(verbs, cmd.Verb)
		if cmd.Verb == "AUTH" && cmd.Arg != "LOGIN" {
			t.Errorf("AUTH recorded with %q; want the mechanism only", cmd.Arg)
		}
	}
	if want := "EHLO AUTH MAIL RCPT DATA QUIT"; strings.Join(verbs, " ") != want {
		t.Errorf("verbs %q, want %q", strings.Join(verbs, " "), want)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 {
		t.Errorf("OnMessage called %d times", len(got))
	}
}

func TestRecordsTLSDialogue(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	srv := upstreamtest.New(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Certificate: certstest.Leaf(t, ca, "upstream.test"), Users: map[string]string{"u": "p"}})
	c, err := smtp.DialStartTLS(srv.Addr(), &tls.Config{ServerName: "upstream.test", RootCAs: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("a@example.com", nil); err == nil {
		t.Error("MAIL without AUTH accepted although users are configured")
	}
	if err := c.Auth(sasl.NewPlainClient("", "u", "p")); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("a@example.com", []string{"b@example.org"}, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	m := srv.Expect(t, 1)[0]
	if m.TLSVersion < tls.VersionTLS12 || m.AuthMechanism != "PLAIN" {
		t.Errorf("received %+v", m)
	}
	var seq []string
	for _, cmd := range srv.Commands() {
		seq = append(seq, cmd.Verb+map[bool]string{true: "+tls", false: ""}[cmd.TLS])
	}
	if want := "EHLO STARTTLS EHLO+tls MAIL+tls AUTH+tls MAIL+tls RCPT+tls DATA+tls"; strings.Join(seq, " ") != want {
		t.Errorf("commands %q, want %q", strings.Join(seq, " "), want)
	}
}

func TestWaitForTimesOut(t *testing.T) {
	t.Parallel()
	srv := upstreamtest.New(t, upstreamtest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	msgs, err := srv.WaitFor(ctx, 1)
	if err == nil || len(msgs) != 0 {
		t.Errorf("WaitFor = %v, %v", msgs, err)
	}
}

func TestNewServerNeedsCertificateForTLS(t *testing.T) {
	t.Parallel()
	if s, err := upstreamtest.NewServer(upstreamtest.Options{TLS: upstreamtest.TLSImplicit}); err == nil {
		s.Close()
		t.Fatal("NewServer with TLS and no certificate succeeded")
	}
	s, err := upstreamtest.NewServer(upstreamtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") {
		t.Errorf("listening on %s, want loopback", s.Addr())
	}
	s.Close()
	s.Close() // idempotent
}
