package relay

import (
	"bytes"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"sealpost/certs/certstest"
	"sealpost/spool"
	"sealpost/upstream/upstreamtest"

	"github.com/emersion/go-smtp"
)

var queuedReply = regexp.MustCompile(`^2\.0\.0 OK: queued as (\d{8}T\d{6}-[a-z2-7]{10})$`)

func TestRelayDeliversOverVerifiedTLS(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	up := tlsUpstream(t, ca)
	env := startRelay(t, newTestConfig(t, ca, up.Addr()), nil)

	reply, err := send(t, env.addr, "app@example.com", []string{"ops@example.net", "oncall@example.net"}, testBody)
	if err != nil {
		t.Fatalf("submission refused: %v", err)
	}
	m := queuedReply.FindStringSubmatch(reply)
	if m == nil {
		t.Fatalf("reply %q does not carry the queue id", reply)
	}
	id := m[1]

	msgs := up.Expect(t, 1)
	got := msgs[0]
	if got.From != "app@example.com" || strings.Join(got.To, ",") != "ops@example.net,oncall@example.net" {
		t.Errorf("envelope = %q → %q", got.From, got.To)
	}
	if got.TLSVersion < tls.VersionTLS12 {
		t.Errorf("delivered over TLS version %#x, want ≥ 1.2", got.TLSVersion)
	}
	if got.AuthUser != testUser {
		t.Errorf("authenticated as %q, want %q", got.AuthUser, testUser)
	}
	original, _ := strings.CutSuffix(testBody, "\r\n\r\n/var is at 91%.\r\n")
	for _, want := range []string{original + "\r\n", "\r\nDate: ", "\r\nMessage-ID: <" + id + "@relay.test>\r\n", "\r\n\r\n/var is at 91%.\r\n"} {
		if !bytes.Contains(got.Data, []byte(want)) {
			t.Errorf("delivered message lacks %q:\n%s", want, got.Data)
		}
	}
	if !bytes.HasPrefix(got.Data, []byte("Received: from client.test ([127.0.0.1])"+selfTCPComment(t)+"\r\n\tby relay.test (sealpost) with ESMTP id "+id+";\r\n")) {
		t.Errorf("no Received field with the queue id:\n%s", got.Data)
	}

	delivered := env.logs.waitRecord(t, "delivered", 1)
	if delivered[0]["queue_id"] != id || delivered[0]["tls"] == "" {
		t.Errorf("delivered record = %v", delivered[0])
	}
	received := env.logs.records("received")
	if len(received) != 1 || received[0]["queue_id"] != id || received[0]["client_ip"] != "127.0.0.1" {
		t.Errorf("received records = %v", received)
	}
	env.stop()
	if n := len(up.Messages()); n != 1 {
		t.Errorf("upstream received %d messages, want exactly 1", n)
	}
	assertQueueLen(t, env.cfg, 0)
}

// assertQueueLen opens the spool read-only (the relay may be stopped) and
// counts the messages still queued.
func assertQueueLen(t *testing.T, cfg *Config, want int) []*spool.Message {
	t.Helper()
	sp, err := spool.Open(cfg.Spool.Dir, spool.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("open spool: %v", err)
	}
	defer sp.Close()
	msgs, err := sp.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != want {
		t.Errorf("%d messages queued, want %d", len(msgs), want)
	}
	return msgs
}

// TestNoTLSNoAuthNoMail: an upstream that does not offer STARTTLS (but
// dangles AUTH) gets neither the password nor the mail; the message waits,
// and goes out on the next attempt once the upstream offers TLS.
func TestNoTLSNoAuthNoMail(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	plain := upstreamtest.New(t, upstreamtest.Options{TLS: upstreamtest.TLSNone, AdvertiseAuth: true, Users: map[string]string{testUser: testPassword}})
	proxy := upstreamtest.NewProxy(t)
	proxy.Set(plain.Addr())
	cfg := newTestConfig(t, ca, proxy.Addr())
	cfg.Upstream.ServerName = "127.0.0.1"
	cfg.Spool.RetryIntervals = []Duration{Duration(300 * time.Millisecond)}
	env := startRelay(t, cfg, nil)

	if _, err := send(t, env.addr, "app@example.com", []string{"ops@example.net"}, testBody); err != nil {
		t.Fatal(err)
	}
	deferred := env.logs.waitRecord(t, "deferred", 1)
	if msg, _ := deferred[0]["error"].(string); !strings.Contains(msg, "starttls-not-offered") {
		t.Errorf("deferred record does not name the TLS check: %v", deferred[0])
	}
	noCommandsAfterConnect(t, plain)
	if len(plain.Messages()) != 0 {
		t.Fatal("plaintext upstream received the message")
	}

	secure := tlsUpstream(t, ca)
	proxy.Set(secure.Addr())
	got := secure.Expect(t, 1)
	if got[0].TLSVersion < tls.VersionTLS12 || got[0].AuthUser != testUser {
		t.Errorf("delivered with TLS %#x as %q", got[0].TLSVersion, got[0].AuthUser)
	}
	noCommandsAfterConnect(t, plain)
	env.stop()
	if msgs := assertQueueLen(t, cfg, 0); len(msgs) > 0 {
		t.Logf("%+v\n%s", msgs[0], env.logs.String())
	}
}

// TestBadUpstreamCertificates: each broken TLS setup keeps the message
// queued, sends nothing after the handshake, and the log names the check.
func TestBadUpstreamCertificates(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	for _, tc := range []struct {
		name      string
		opts      func() upstreamtest.Options
		wantCheck string
	}{
		{"untrusted self-signed", func() upstreamtest.Options {
			return upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Certificate: certstest.SelfSigned(t, "127.0.0.1")}
		}, "certificate-untrusted"},
		{"certificate for another host", func() upstreamtest.Options {
			return upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Certificate: certstest.Leaf(t, ca, "smtp.other.example")}
		}, "certificate-hostname"},
		{"TLS 1.1 at most", func() upstreamtest.Options {
			return upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Certificate: certstest.Leaf(t, ca, "127.0.0.1"), MaxTLSVersion: tls.VersionTLS11}
		}, "protocol-version"},
		{"implicit TLS, untrusted", func() upstreamtest.Options {
			return upstreamtest.Options{TLS: upstreamtest.TLSImplicit, Certificate: certstest.SelfSigned(t, "127.0.0.1")}
		}, "certificate-untrusted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := tc.opts()
			opts.Users = map[string]string{testUser: testPassword}
			up := upstreamtest.New(t, opts)
			cfg := newTestConfig(t, ca, up.Addr())
			if opts.TLS == upstreamtest.TLSImplicit {
				cfg.Upstream.TLS = "implicit"
			}
			env := startRelay(t, cfg, nil)
			if _, err := send(t, env.addr, "app@example.com", []string{"ops@example.net"}, testBody); err != nil {
				t.Fatal(err)
			}
			deferred := env.logs.waitRecord(t, "deferred", 1)
			if msg, _ := deferred[0]["error"].(string); !strings.Contains(msg, tc.wantCheck) {
				t.Errorf("deferred error %q does not name %q", msg, tc.wantCheck)
			}
			noCommandsAfterConnect(t, up)
			env.stop()
			if len(up.Messages()) != 0 {
				t.Error("upstream received the message")
			}
			assertQueueLen(t, cfg, 1)
		})
	}
}

// TestSecretSources: every way of handing over the secret delivers, and
// none leaks it into the log (checked by startRelay's cleanup).
func TestSecretSources(t *testing.T) {
	ca := certstest.NewCA(t)
	up := tlsUpstream(t, ca)
	dir := t.TempDir()
	credDir := filepath.Join(dir, "creds")
	os.Mkdir(credDir, 0o700)
	os.WriteFile(filepath.Join(credDir, "upstream.password"), []byte(testPassword), 0o600)
	script := filepath.Join(dir, "pw.sh")
	os.WriteFile(script, []byte("#!/bin/sh\necho '"+testPassword+"'\n"), 0o700)
	t.Setenv("SEALPOST_TEST_PW", testPassword)
	t.Setenv("CREDENTIALS_DIRECTORY", credDir)

	for _, tc := range []struct {
		name string
		set  func(*UpstreamConfig)
	}{
		{"file", func(*UpstreamConfig) {}},
		{"env", func(u *UpstreamConfig) { u.PasswordFile, u.PasswordEnv = "", "SEALPOST_TEST_PW" }},
		{"command", func(u *UpstreamConfig) { u.PasswordFile, u.PasswordCommand = "", []string{script} }},
		{"systemd credential", func(u *UpstreamConfig) { u.PasswordFile, u.Credential = "", "upstream.password" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := newTestConfig(t, ca, up.Addr())
			tc.set(&cfg.Upstream)
			before := len(up.Messages())
			env := startRelay(t, cfg, nil)
			if _, err := send(t, env.addr, "app@example.com", []string{"ops@example.net"}, testBody); err != nil {
				t.Fatal(err)
			}
			msgs := up.Expect(t, before+1)
			if msgs[len(msgs)-1].AuthUser != testUser {
				t.Errorf("authenticated as %q", msgs[len(msgs)-1].AuthUser)
			}
		})
	}
}

func TestWorldReadablePasswordFileRefused(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	cfg := newTestConfig(t, ca, "127.0.0.1:1")
	if err := os.Chmod(cfg.Upstream.PasswordFile, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := New(cfg, Options{})
	if err == nil {
		t.Fatal("relay started with a 0644 password file")
	}
	if !strings.Contains(err.Error(), cfg.Upstream.PasswordFile) || strings.Contains(err.Error(), testPassword) {
		t.Errorf("error should name the file and not the secret: %v", err)
	}
}

// TestWrongPasswordStaysQueuedAndSecret: AUTH failure is temporary (the
// message waits for the admin to fix the password) and the failure's log
// lines do not contain the password.
func TestWrongPasswordStaysQueuedAndSecret(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	up := upstreamtest.New(t, upstreamtest.Options{
		TLS:         upstreamtest.TLSStartTLS,
		Certificate: certstest.Leaf(t, ca, "127.0.0.1"),
		Users:       map[string]string{testUser: "the-right-one"},
	})
	cfg := newTestConfig(t, ca, up.Addr())
	env := startRelay(t, cfg, nil)
	if _, err := send(t, env.addr, "app@example.com", []string{"ops@example.net"}, testBody); err != nil {
		t.Fatal(err)
	}
	deferred := env.logs.waitRecord(t, "deferred", 1)
	if msg, _ := deferred[0]["error"].(string); !strings.Contains(msg, "auth") {
		t.Errorf("deferred error does not say AUTH failed: %q", msg)
	}
	env.stop()
	assertQueueLen(t, cfg, 1)
}

// TestQueuedMessagesSurviveRestart: mail accepted while the upstream is
// down is delivered by the next relay process on the same spool; a
// truncated temporary file left by a crash is never delivered.
func TestQueuedMessagesSurviveRestart(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	proxy := upstreamtest.NewProxy(t) // target unset: the upstream is down
	cfg := newTestConfig(t, ca, proxy.Addr())
	cfg.Upstream.ServerName = "127.0.0.1"
	// Queued mail keeps its retry schedule across a restart; keep it short.
	cfg.Spool.RetryIntervals = []Duration{Duration(300 * time.Millisecond)}
	first := startRelay(t, cfg, nil)
	for i := range 3 {
		body := strings.Replace(testBody, "disk almost full", "alert "+string(rune('A'+i)), 1)
		if _, err := send(t, first.addr, "app@example.com", []string{"ops@example.net"}, body); err != nil {
			t.Fatal(err)
		}
	}
	first.logs.waitRecord(t, "deferred", 3)
	first.stop()
	assertQueueLen(t, cfg, 3)

	// What a crash in the middle of a write leaves behind.
	truncated := filepath.Join(cfg.Spool.Dir, "tmp", "20261127T000000-aaaaaaaaaa.eml")
	if err := os.WriteFile(truncated, []byte("From: half@example.com\r\nSubj"), 0o600); err != nil {
		t.Fatal(err)
	}

	up := tlsUpstream(t, ca)
	proxy.Set(up.Addr())
	second := startRelay(t, cfg, nil)
	msgs := up.Expect(t, 3)
	second.logs.waitRecord(t, "delivered", 3)
	second.stop()
	seen := map[string]bool{}
	for _, m := range up.Messages() {
		if bytes.Contains(m.Data, []byte("half@example.com")) {
			t.Error("the truncated temporary file was delivered")
		}
		for _, s := range []string{"alert A", "alert B", "alert C"} {
			if bytes.Contains(m.Data, []byte(s)) {
				seen[s] = true
			}
		}
	}
	if len(msgs) != 3 || len(seen) != 3 {
		t.Errorf("delivered %d messages covering %v, want the 3 alerts once each", len(up.Messages()), seen)
	}
	if _, err := os.Stat(truncated); !os.IsNotExist(err) {
		t.Errorf("truncated temp file still there: %v", err)
	}
	assertQueueLen(t, cfg, 0)
}

func TestClientOutsideAllowedNetworksRefused(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	cfg := newTestConfig(t, ca, "127.0.0.1:1")
	cfg.Listen.AllowNetworks = []Network{mustNetwork("127.0.0.2/32")}
	env := startRelay(t, cfg, nil)
	reply := readGreeting(t, env.addr)
	if !strings.HasPrefix(reply, "554 5.7.1 ") {
		t.Errorf("greeting for a client outside allow_networks = %q, want 554 5.7.1", reply)
	}
	rec := env.logs.waitRecord(t, "rejected", 1)
	if rec[0]["rule"] != "allow_networks" {
		t.Errorf("rejected record = %v", rec[0])
	}
}

func TestConnectionCapsHold(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	cfg := newTestConfig(t, ca, "127.0.0.1:1")
	cfg.Listen.MaxConnections = 3
	cfg.Listen.MaxConnectionsPerClient = 2
	env := startRelay(t, cfg, nil)
	var held []func()
	for range 2 {
		c := dialRelay(t, env.addr)
		held = append(held, func() { c.Close() })
		if g := readLine(t, c); !strings.HasPrefix(g, "220 ") {
			t.Fatalf("greeting %q", g)
		}
	}
	if g := readGreeting(t, env.addr); !strings.HasPrefix(g, "421 4.7.0 ") {
		t.Errorf("third connection from one client got %q, want 421 4.7.0", g)
	}
	for _, release := range held {
		release()
	}
	// Slots come back when connections end (the release is asynchronous).
	deadline := time.Now().Add(10 * time.Second)
	for env.relay.conns.Active() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if g := readGreeting(t, env.addr); !strings.HasPrefix(g, "220 ") {
		t.Errorf("after the others left, a new connection got %q", g)
	}
}

func TestMessageTooBig(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	cfg := newTestConfig(t, ca, "127.0.0.1:1")
	cfg.Listen.MaxMessageSize = 1024
	env := startRelay(t, cfg, nil)
	_, err := send(t, env.addr, "app@example.com", []string{"ops@example.net"}, testBody+strings.Repeat("0123456789abcdef\r\n", 100))
	if err == nil || !strings.Contains(err.Error(), "552") {
		t.Errorf("oversized message: err = %v, want 552\n%s", err, env.logs.String())
	}
	// DESIGN.md's reply table: 552 5.3.4 on the wire, not only in the
	// mapping (reply_test.go).
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.EnhancedCode != (smtp.EnhancedCode{5, 3, 4}) {
		t.Errorf("oversized message: %v, want enhanced code 5.3.4", err)
	}
	assertQueueLen(t, cfg, 0)
}

// TestSizeDeclaredUpstream: the spooled size goes out as MAIL FROM's SIZE,
// so an upstream with a smaller limit refuses before the body is sent.
func TestSizeDeclaredUpstream(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	up := upstreamtest.New(t, upstreamtest.Options{
		TLS:             upstreamtest.TLSStartTLS,
		Certificate:     certstest.Leaf(t, ca, "127.0.0.1"),
		Users:           map[string]string{testUser: testPassword},
		MaxMessageBytes: 100_000,
	})
	cfg := newTestConfig(t, ca, up.Addr())
	cfg.Spool.Bounce = false
	env := startRelay(t, cfg, nil)
	if _, err := send(t, env.addr, "app@example.com", []string{"ops@example.net"}, testBody); err != nil {
		t.Fatal(err)
	}
	got := up.Expect(t, 1)[0]
	if got.Size != int64(len(got.Data)) {
		t.Errorf("declared SIZE=%d, message is %d bytes", got.Size, len(got.Data))
	}
	big := testBody + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef\r\n", 3000)
	if _, err := send(t, env.addr, "app@example.com", []string{"ops@example.net"}, big); err != nil {
		t.Fatal(err)
	}
	failed := env.logs.waitRecord(t, "failed", 1)
	if msg, _ := failed[0]["error"].(string); !strings.Contains(msg, "552") {
		t.Errorf("oversized for the upstream: %v, want a permanent 552", failed[0])
	}
	datas := 0
	for _, c := range up.Commands() {
		if c.Verb == "DATA" || c.Verb == "BDAT" {
			datas++
		}
	}
	if datas != 1 {
		t.Errorf("%d DATA commands, want 1: the oversized body must not be sent", datas)
	}
}
