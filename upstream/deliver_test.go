package upstream_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"sealpost/certs"
	"sealpost/certs/certstest"
	"sealpost/upstream"
	"sealpost/upstream/upstreamtest"
)

func TestDeliverHappyPath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		opts     upstreamtest.Options
		mode     string
		mech     upstream.Mechanism
		secret   string
		noAuth   bool
		wantMech string
	}{
		{name: "starttls plain", opts: upstreamtest.Options{TLS: upstreamtest.TLSStartTLS}, mode: "starttls", mech: "plain", wantMech: "PLAIN"},
		{name: "starttls login", opts: upstreamtest.Options{TLS: upstreamtest.TLSStartTLS}, mode: "starttls", mech: "login", wantMech: "LOGIN"},
		{name: "starttls xoauth2", opts: upstreamtest.Options{TLS: upstreamtest.TLSStartTLS}, mode: "starttls", mech: "xoauth2", secret: token, wantMech: "XOAUTH2"},
		{name: "auto picks plain", opts: upstreamtest.Options{TLS: upstreamtest.TLSStartTLS}, mode: "starttls", wantMech: "PLAIN"},
		{name: "auto falls back to login", opts: upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Mechanisms: []string{"LOGIN"}}, mode: "starttls", wantMech: "LOGIN"},
		{name: "implicit plain", opts: upstreamtest.Options{TLS: upstreamtest.TLSImplicit}, mode: "implicit", mech: "plain", wantMech: "PLAIN"},
		{name: "implicit xoauth2", opts: upstreamtest.Options{TLS: upstreamtest.TLSImplicit}, mode: "implicit", mech: "XOAUTH2", secret: token, wantMech: "XOAUTH2"},
		{name: "TLS 1.2 server", opts: upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, MaxTLSVersion: tls.VersionTLS12}, mode: "starttls", wantMech: "PLAIN"},
		{name: "no auth", opts: upstreamtest.Options{TLS: upstreamtest.TLSStartTLS}, mode: "starttls", noAuth: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if !tt.noAuth {
				tt.opts.Users = map[string]string{user: password}
				tt.opts.Tokens = map[string]string{user: token}
			}
			f := newUpstream(t, tt.opts)
			cfg := f.config(t, tt.mode)
			cfg.Auth = tt.mech
			if tt.secret != "" {
				cfg.Secret = staticSecret(tt.secret)
			}
			if tt.noAuth {
				cfg.Username, cfg.Secret = "", nil
			}
			perRcpt, info, err := deliver(t, newClient(t, cfg), "a@example.org", "b@example.org")
			if err != nil {
				t.Fatalf("Deliver: %v", err)
			}
			for i, e := range perRcpt {
				if e != nil {
					t.Errorf("recipient %d refused: %v", i, e)
				}
			}
			msgs := f.srv.Expect(t, 1)
			m := msgs[0]
			if string(m.Data) != testMessage {
				t.Errorf("data arrived altered:\n got %q\nwant %q", m.Data, testMessage)
			}
			if m.From != "app@example.com" || strings.Join(m.To, ",") != "a@example.org,b@example.org" {
				t.Errorf("envelope %q → %v", m.From, m.To)
			}
			if !tlsAtLeast12(m.TLSVersion) {
				t.Errorf("message arrived over TLS version %#x", m.TLSVersion)
			}
			if m.AuthMechanism != tt.wantMech {
				t.Errorf("authenticated with %q, want %q", m.AuthMechanism, tt.wantMech)
			}
			if !tt.noAuth && m.AuthUser != user {
				t.Errorf("authenticated as %q, want %q", m.AuthUser, user)
			}
			if m.Size != int64(len(testMessage)) {
				t.Errorf("SIZE=%d, want %d", m.Size, len(testMessage))
			}
			if !strings.HasPrefix(info.TLSVersion, "TLS1.") || info.TLSVersion < "TLS1.2" || info.CipherSuite == "" || info.Reply == "" || info.Duration <= 0 {
				t.Errorf("DeliveryInfo %+v", info)
			}
			assertNothingSensitiveInClear(t, f.srv)
			if tt.mode == "starttls" {
				// Our own EHLO name is used before and after STARTTLS.
				cmds := f.srv.Commands()
				if len(cmds) < 2 || cmds[0].Verb != "EHLO" || cmds[1].Verb != "STARTTLS" || cmds[0].TLS {
					t.Errorf("plaintext dialogue: %+v", cmds)
				}
			}
		})
	}
}

func TestStartTLSNotOffered(t *testing.T) {
	t.Parallel()
	// The server advertises AUTH in the clear and would accept the password.
	f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSNone, AdvertiseAuth: true, Users: map[string]string{user: password}})
	cfg := f.config(t, "starttls")
	_, _, err := deliver(t, newClient(t, cfg))
	if err == nil {
		t.Fatal("Deliver succeeded without TLS")
	}
	if got := asTLSError(t, err).Check; got != upstream.CheckStartTLSNotOffered {
		t.Errorf("Check = %q, want %q", got, upstream.CheckStartTLSNotOffered)
	}
	if !asError(t, err).Temporary() || !upstream.IsTemporary(err) {
		t.Error("a missing STARTTLS must be temporary: the mail stays queued")
	}
	assertNoAuthNoMail(t, f.srv)
	cmds := f.srv.Commands()
	if len(cmds) == 0 || cmds[0].Verb != "EHLO" {
		t.Errorf("commands %+v, want an EHLO first", cmds)
	}
}

// TestImplicitAgainstPlaintextServer: implicit TLS towards a plaintext
// server fails in the handshake, sending nothing but a ClientHello.
func TestImplicitAgainstPlaintextServer(t *testing.T) {
	t.Parallel()
	f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSNone, AdvertiseAuth: true, Users: map[string]string{user: password}})
	_, _, err := deliver(t, newClient(t, f.config(t, "implicit")))
	if got := asTLSError(t, err).Check; got != upstream.CheckHandshake {
		t.Errorf("Check = %q, want handshake", got)
	}
	assertNoAuthNoMail(t, f.srv)
}

func TestBadCertificates(t *testing.T) {
	t.Parallel()
	future := func() time.Time { return time.Now().Add(2 * 365 * 24 * time.Hour) }
	tests := []struct {
		name   string
		cert   func(t *testing.T, ca *certs.CA) tls.Certificate
		maxTLS uint16
		client func(*tls.Config)
		want   string
	}{
		{name: "self-signed", cert: func(t *testing.T, _ *certs.CA) tls.Certificate {
			return certstest.SelfSigned(t, serverName, "127.0.0.1")
		}, want: upstream.CheckUntrusted},
		{name: "other CA", cert: func(t *testing.T, _ *certs.CA) tls.Certificate {
			return certstest.Leaf(t, certstest.NewCA(t), serverName)
		}, want: upstream.CheckUntrusted},
		{name: "other host name", cert: func(t *testing.T, ca *certs.CA) tls.Certificate {
			return certstest.Leaf(t, ca, "other.test", "127.0.0.1")
		}, want: upstream.CheckHostname},
		{name: "expired", client: func(c *tls.Config) { c.Time = future }, want: upstream.CheckExpired},
		{name: "server max TLS 1.1", maxTLS: tls.VersionTLS11, want: upstream.CheckProtocolVersion},
		{name: "server max TLS 1.2, client min 1.3", maxTLS: tls.VersionTLS12, client: func(c *tls.Config) { c.MinVersion = tls.VersionTLS13 }, want: upstream.CheckProtocolVersion},
	}
	for _, mode := range []string{"starttls", "implicit"} {
		for _, tt := range tests {
			t.Run(mode+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				ca := certstest.NewCA(t)
				opts := upstreamtest.Options{
					TLS:           upstreamtest.TLSStartTLS,
					MaxTLSVersion: tt.maxTLS,
					AdvertiseAuth: true,
					Users:         map[string]string{user: password},
				}
				if mode == "implicit" {
					opts.TLS = upstreamtest.TLSImplicit
				}
				if tt.cert != nil {
					opts.Certificate = tt.cert(t, ca)
				} else {
					opts.Certificate = certstest.Leaf(t, ca, serverName, "127.0.0.1")
				}
				f := fixture{ca: ca, srv: upstreamtest.New(t, opts)}
				cfg := f.config(t, mode)
				if tt.client != nil {
					cfg.TLS = cfg.TLS.Clone()
					tt.client(cfg.TLS)
				}
				_, info, err := deliver(t, newClient(t, cfg))
				if err == nil {
					t.Fatal("Deliver succeeded")
				}
				tlsErr := asTLSError(t, err)
				if tlsErr.Check != tt.want {
					t.Errorf("Check = %q, want %q (err: %v)", tlsErr.Check, tt.want, err)
				}
				if !upstream.IsTemporary(err) || !tlsErr.Temporary() {
					t.Error("TLS failures must be temporary")
				}
				if e := asError(t, err); e.Op != "tls" {
					t.Errorf("Op = %q, want tls", e.Op)
				}
				if info.TLSVersion != "" {
					t.Errorf("info.TLSVersion = %q after a failed handshake", info.TLSVersion)
				}
				if !strings.Contains(err.Error(), tt.want) {
					t.Errorf("error text %q does not name the check", err)
				}
				assertNoAuthNoMail(t, f.srv)
			})
		}
	}
}

func TestWrongPasswordIsTemporaryAndRedacted(t *testing.T) {
	t.Parallel()
	const wrong = "wrong-password-Zq81xx"
	for _, tt := range []struct {
		mech   upstream.Mechanism
		secret string
	}{{"plain", wrong}, {"login", wrong}, {"xoauth2", "ya29.wrong-token-Zq81"}} {
		t.Run(string(tt.mech), func(t *testing.T) {
			t.Parallel()
			f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Users: map[string]string{user: password}, Tokens: map[string]string{user: token}})
			cfg := f.config(t, "starttls")
			cfg.Auth = tt.mech
			cfg.Secret = staticSecret(tt.secret)
			_, _, err := deliver(t, newClient(t, cfg))
			if err == nil {
				t.Fatal("Deliver succeeded with a wrong secret")
			}
			e := asError(t, err)
			if e.Op != "auth" || e.Code != 535 {
				t.Errorf("Op %q Code %d, want auth 535", e.Op, e.Code)
			}
			if !e.Temporary() {
				t.Error("a rejected password must be temporary, not bounce the queue")
			}
			if !errors.Is(err, upstream.ErrAuthRejected) {
				t.Errorf("error %v does not wrap ErrAuthRejected", err)
			}
			if !strings.Contains(err.Error(), user) {
				t.Errorf("error %q does not name the user", err)
			}
			if tt.mech == "xoauth2" && !strings.Contains(err.Error(), `"status":"401"`) {
				t.Errorf("XOAUTH2 error %q lacks the server's explanation", err)
			}

			var buf bytes.Buffer
			logger := slog.New(slog.NewJSONHandler(&buf, nil))
			secret := upstream.NewSecret(tt.secret)
			logger.Error("delivery failed", "err", err, "secret", secret, "secret_ptr", &secret, "cfg", cfg)
			for _, where := range []struct{ name, text string }{{"err.Error()", err.Error()}, {"slog JSON", buf.String()}} {
				if strings.Contains(where.text, tt.secret) {
					t.Errorf("secret appears in %s: %s", where.name, where.text)
				}
			}
			if !json.Valid(bytes.TrimSpace(buf.Bytes())) || !strings.Contains(buf.String(), `"secret":"[redacted]"`) {
				t.Errorf("slog line: %s", buf.String())
			}
			assertNothingSensitiveInClear(t, f.srv)
			if n := len(f.srv.Messages()); n != 0 {
				t.Errorf("%d messages delivered", n)
			}
		})
	}
}

func TestMechanismNotOffered(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		mech      upstream.Mechanism
		offered   []string
		wantInMsg string
	}{
		{mech: "xoauth2", offered: []string{"PLAIN", "LOGIN"}, wantInMsg: "does not offer AUTH XOAUTH2"},
		{mech: "plain", offered: []string{"LOGIN"}, wantInMsg: "does not offer AUTH PLAIN"},
		{mech: "", offered: []string{"XOAUTH2"}, wantInMsg: "does not offer AUTH PLAIN or LOGIN"},
		{mech: "", offered: []string{}, wantInMsg: "does not offer AUTH PLAIN or LOGIN"},
	} {
		t.Run(string(tt.mech)+"/"+strings.Join(tt.offered, "+"), func(t *testing.T) {
			t.Parallel()
			f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Users: map[string]string{user: password}, Mechanisms: tt.offered})
			cfg := f.config(t, "starttls")
			cfg.Auth = tt.mech
			_, _, err := deliver(t, newClient(t, cfg))
			e := asError(t, err)
			if e.Op != "auth" || !e.Temporary() || !errors.Is(err, upstream.ErrMechanismNotOffered) || !strings.Contains(err.Error(), tt.wantInMsg) {
				t.Errorf("err = %v (Op %q, temporary %v); want a temporary auth error saying %q", err, e.Op, e.Temporary(), tt.wantInMsg)
			}
			assertNoAuthNoMail(t, f.srv)
		})
	}
}

func TestPerRecipient(t *testing.T) {
	t.Parallel()
	rcptReply := func(addr string) *smtp.SMTPError {
		switch {
		case strings.HasPrefix(addr, "gone@"):
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
		case strings.HasPrefix(addr, "full@"):
			return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "Mailbox full"}
		}
		return nil
	}

	t.Run("mixed", func(t *testing.T) {
		t.Parallel()
		f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Users: map[string]string{user: password}, RcptReply: rcptReply})
		perRcpt, _, err := deliver(t, newClient(t, f.config(t, "starttls")), "ok@example.org", "gone@example.org", "full@example.org")
		if err != nil {
			t.Fatalf("Deliver: %v", err)
		}
		if len(perRcpt) != 3 || perRcpt[0] != nil {
			t.Fatalf("perRcpt = %v", perRcpt)
		}
		gone, full := asError(t, perRcpt[1]), asError(t, perRcpt[2])
		if gone.Op != "rcpt" || gone.Code != 550 || gone.EnhancedCode != [3]int{5, 1, 1} || gone.Temporary() {
			t.Errorf("550 recipient: %+v temporary=%v, want permanent", gone, gone.Temporary())
		}
		if full.Code != 450 || !full.Temporary() {
			t.Errorf("450 recipient: %+v temporary=%v, want temporary", full, full.Temporary())
		}
		msgs := f.srv.Expect(t, 1)
		if strings.Join(msgs[0].To, ",") != "ok@example.org" {
			t.Errorf("delivered to %v", msgs[0].To)
		}
	})

	t.Run("all refused", func(t *testing.T) {
		t.Parallel()
		f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Users: map[string]string{user: password}, RcptReply: rcptReply})
		perRcpt, _, err := deliver(t, newClient(t, f.config(t, "starttls")), "gone@example.org", "full@example.org")
		if !errors.Is(err, upstream.ErrAllRecipientsRefused) {
			t.Fatalf("err = %v, want ErrAllRecipientsRefused", err)
		}
		if len(perRcpt) != 2 || upstream.IsTemporary(perRcpt[0]) || !upstream.IsTemporary(perRcpt[1]) {
			t.Errorf("perRcpt = %v", perRcpt)
		}
		// A pipelined DATA reaches the server, which refuses it for want
		// of recipients; the session is never asked for a body.
		for _, c := range f.srv.Commands() {
			if c.Verb == "DATA" {
				t.Error("the server took a body although every recipient was refused")
			}
		}
		if n := len(f.srv.Messages()); n != 0 {
			t.Errorf("%d messages delivered", n)
		}
	})
}

func TestReplyClassification(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		opts      upstreamtest.Options
		wantOp    string
		wantCode  int
		temporary bool
	}{
		{name: "MAIL 550", opts: upstreamtest.Options{MailReply: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Sender not allowed"}}, wantOp: "mail", wantCode: 550},
		{name: "MAIL 451", opts: upstreamtest.Options{MailReply: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Slow down"}}, wantOp: "mail", wantCode: 451, temporary: true},
		{name: "DATA 554", opts: upstreamtest.Options{DataReply: &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Spam"}}, wantOp: "data", wantCode: 554},
		{name: "DATA 451", opts: upstreamtest.Options{DataReply: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Try later"}}, wantOp: "data", wantCode: 451, temporary: true},
		{name: "SIZE exceeded", opts: upstreamtest.Options{MaxMessageBytes: 10}, wantOp: "mail", wantCode: 552},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.opts.TLS = upstreamtest.TLSStartTLS
			tt.opts.Users = map[string]string{user: password}
			f := newUpstream(t, tt.opts)
			_, _, err := deliver(t, newClient(t, f.config(t, "starttls")))
			e := asError(t, err)
			if e.Op != tt.wantOp || e.Code != tt.wantCode || e.Temporary() != tt.temporary {
				t.Errorf("err = %v: Op %q Code %d temporary %v; want %q %d %v", err, e.Op, e.Code, e.Temporary(), tt.wantOp, tt.wantCode, tt.temporary)
			}
			if n := len(f.srv.Messages()); n != 0 {
				t.Errorf("%d messages recorded", n)
			}
		})
	}
}

func TestSMTPUTF8(t *testing.T) {
	t.Parallel()
	for _, offered := range []bool{true, false} {
		t.Run(map[bool]string{true: "offered", false: "not offered"}[offered], func(t *testing.T) {
			t.Parallel()
			f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Users: map[string]string{user: password}, SMTPUTF8: offered})
			c := newClient(t, f.config(t, "starttls"))
			_, _, err := c.Deliver(context.Background(), upstream.Message{From: "app@example.com", To: []string{"dörte@example.org"}, SMTPUTF8: true}, strings.NewReader(testMessage))
			if offered {
				if err != nil {
					t.Fatal(err)
				}
				if m := f.srv.Expect(t, 1)[0]; !m.SMTPUTF8 || m.To[0] != "dörte@example.org" {
					t.Errorf("received %+v", m)
				}
				return
			}
			if e := asError(t, err); e.Temporary() || e.EnhancedCode != [3]int{5, 6, 7} {
				t.Errorf("err = %v, want permanent 5.6.7", err)
			}
		})
	}
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("disk on fire")
	}
	n := copy(p, strings.Repeat("x", min(len(p), r.n)))
	r.n -= n
	return n, nil
}

// TestBodyReadErrorDeliversNothing: a spool read error mid-body must not
// end the DATA with a dot, which would deliver a truncated message.
func TestBodyReadErrorDeliversNothing(t *testing.T) {
	t.Parallel()
	f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Users: map[string]string{user: password}})
	c := newClient(t, f.config(t, "starttls"))
	_, _, err := c.Deliver(context.Background(), upstream.Message{From: "app@example.com", To: []string{"a@example.org"}}, &failingReader{n: 100})
	e := asError(t, err)
	if e.Op != "data" || !e.Temporary() || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("err = %v", err)
	}
	// Let the server notice the dropped connection; nothing may arrive.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if msgs, _ := f.srv.WaitFor(ctx, 1); len(msgs) != 0 {
		t.Errorf("server received %d messages", len(msgs))
	}
}

func TestDialFailureIsTemporary(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS})
	cfg := f.config(t, "starttls")
	cfg.Addr = addr
	_, _, err = deliver(t, newClient(t, cfg))
	if e := asError(t, err); e.Op != "dial" || !e.Temporary() {
		t.Errorf("err = %v, want temporary dial error", err)
	}
}

// silentServer accepts connections and then says whatever script says,
// for dialogues upstreamtest cannot produce.
func silentServer(t *testing.T, script func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				script(c)
			}()
		}
	}()
	return ln.Addr().String()
}

func TestContextCancelStopsHungUpstream(t *testing.T) {
	t.Parallel()
	addr := silentServer(t, func(c net.Conn) { io.Copy(io.Discard, c) }) // never greets
	f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS})
	for _, mode := range []string{"starttls", "implicit"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			cfg := f.config(t, mode)
			cfg.Addr = addr
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, _, err := newClient(t, cfg).Deliver(ctx, upstream.Message{From: "a@example.com", To: []string{"b@example.org"}}, strings.NewReader(testMessage))
			if time.Since(start) > 5*time.Second {
				t.Errorf("Deliver took %v after the context ended", time.Since(start))
			}
			if !errors.Is(err, context.DeadlineExceeded) || !upstream.IsTemporary(err) {
				t.Errorf("err = %v, want a temporary deadline error", err)
			}
		})
	}
}

func TestCommandTimeout(t *testing.T) {
	t.Parallel()
	addr := silentServer(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS})
	cfg := f.config(t, "starttls")
	cfg.Addr = addr
	cfg.CommandTimeout = 200 * time.Millisecond
	_, _, err := newClient(t, cfg).Deliver(context.Background(), upstream.Message{From: "a@example.com", To: []string{"b@example.org"}}, strings.NewReader(testMessage))
	var ne net.Error
	if e := asError(t, err); e.Op != "greeting" || !e.Temporary() || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("err = %v, want a temporary greeting timeout", err)
	}
}

func TestStartTLSResponseInjection(t *testing.T) {
	t.Parallel()
	addr := silentServer(t, func(c net.Conn) {
		buf := make([]byte, 512)
		io.WriteString(c, "220 evil.test ESMTP\r\n")
		c.Read(buf) // EHLO
		io.WriteString(c, "250-evil.test\r\n250-AUTH PLAIN\r\n250 STARTTLS\r\n")
		c.Read(buf) // STARTTLS
		// A man in the middle appends plaintext replies the client would
		// otherwise take as coming over TLS.
		io.WriteString(c, "220 go ahead\r\n250-evil.test\r\n250 AUTH PLAIN\r\n")
		c.Read(buf)
	})
	f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS})
	cfg := f.config(t, "starttls")
	cfg.Addr = addr
	_, _, err := deliver(t, newClient(t, cfg))
	if got := asTLSError(t, err).Check; got != upstream.CheckStartTLSInjection {
		t.Errorf("Check = %q, want %q (err %v)", got, upstream.CheckStartTLSInjection, err)
	}
}

func TestStartTLSRefused(t *testing.T) {
	t.Parallel()
	addr := silentServer(t, func(c net.Conn) {
		buf := make([]byte, 512)
		io.WriteString(c, "220 busy.test ESMTP\r\n")
		c.Read(buf)
		io.WriteString(c, "250-busy.test\r\n250 STARTTLS\r\n")
		c.Read(buf)
		io.WriteString(c, "454 4.7.0 TLS not available due to temporary reason\r\n")
		c.Read(buf)
	})
	f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS})
	cfg := f.config(t, "starttls")
	cfg.Addr = addr
	_, _, err := deliver(t, newClient(t, cfg))
	e := asError(t, err)
	if asTLSError(t, err).Check != upstream.CheckStartTLSRefused || e.Code != 454 || e.EnhancedCode != [3]int{4, 7, 0} || !e.Temporary() {
		t.Errorf("err = %v (%+v)", err, e)
	}
}

func TestSecretFuncErrorDoesNotDial(t *testing.T) {
	t.Parallel()
	f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Users: map[string]string{user: password}})
	cfg := f.config(t, "starttls")
	cfg.Secret = func(context.Context) (upstream.Secret, error) {
		return upstream.Secret{}, errors.New("password file /x is readable by group or others")
	}
	_, _, err := deliver(t, newClient(t, cfg))
	if e := asError(t, err); e.Op != "auth" || !e.Temporary() {
		t.Errorf("err = %v", err)
	}
	if cmds := f.srv.Commands(); len(cmds) != 0 {
		t.Errorf("server saw %v; the secret failure should come before dialling", cmds)
	}
}

func TestNewClientValidation(t *testing.T) {
	t.Parallel()
	good, err := certs.ClientConfig(certs.ClientOptions{ServerName: serverName})
	if err != nil {
		t.Fatal(err)
	}
	insecure := good.Clone()
	insecure.InsecureSkipVerify = true
	noName := good.Clone()
	noName.ServerName = ""
	old := good.Clone()
	old.MinVersion = tls.VersionTLS11
	base := upstream.Config{Addr: "127.0.0.1:587", TLS: good, Username: user, Secret: staticSecret(password)}

	tests := []struct {
		name   string
		mutate func(*upstream.Config)
		want   string
	}{
		{name: "ok", mutate: func(*upstream.Config) {}},
		{name: "no port", mutate: func(c *upstream.Config) { c.Addr = "127.0.0.1" }, want: "address"},
		{name: "plaintext mode", mutate: func(c *upstream.Config) { c.TLSMode = "none" }, want: "no plaintext mode"},
		{name: "no TLS config", mutate: func(c *upstream.Config) { c.TLS = nil }, want: "TLS configuration is required"},
		{name: "insecure", mutate: func(c *upstream.Config) { c.TLS = insecure }, want: "InsecureSkipVerify"},
		{name: "no server name", mutate: func(c *upstream.Config) { c.TLS = noName }, want: "ServerName"},
		{name: "TLS 1.1", mutate: func(c *upstream.Config) { c.TLS = old }, want: "below 1.2"},
		{name: "user without secret", mutate: func(c *upstream.Config) { c.Secret = nil }, want: "no password source"},
		{name: "secret without user", mutate: func(c *upstream.Config) { c.Username = "" }, want: "no username"},
		{name: "unknown mechanism", mutate: func(c *upstream.Config) { c.Auth = "cram-md5" }, want: "unknown auth mechanism"},
		{name: "bad hostname", mutate: func(c *upstream.Config) { c.Hostname = "a b" }, want: "white space"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := base
			tt.mutate(&cfg)
			_, err := upstream.NewClient(cfg)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one containing %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), password) {
				t.Error("validation error contains the password")
			}
		})
	}
}
