package relay

import (
	"bufio"
	"bytes"
	"crypto"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sealpost/internal/fakeclock"
	"sealpost/spool"

	"github.com/emersion/go-smtp"

	"sealpost/certs"
	"sealpost/certs/certstest"
)

// rawSubmit speaks SMTP with exactly the bytes given for DATA (dot-stuffed
// after CRLF as a client would), so bare CR/LF and NUL reach the relay as
// sent. It returns the final reply line to DATA.
func rawSubmit(t *testing.T, addr, from, to string, smtputf8 bool, data []byte) string {
	t.Helper()
	c := dialRelay(t, addr)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	reply := func() string {
		var last string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return "EOF"
			}
			last = strings.TrimRight(line, "\r\n")
			if len(last) < 4 || last[3] != '-' {
				return last
			}
		}
	}
	send := func(s string) string {
		c.Write([]byte(s))
		return reply()
	}
	reply()
	send("EHLO client.test\r\n")
	mail := "MAIL FROM:<" + from + ">"
	if smtputf8 {
		mail += " SMTPUTF8"
	}
	if r := send(mail + "\r\n"); !strings.HasPrefix(r, "250") {
		return r
	}
	if r := send("RCPT TO:<" + to + ">\r\n"); !strings.HasPrefix(r, "250") {
		return r
	}
	if r := send("DATA\r\n"); !strings.HasPrefix(r, "354") {
		return r
	}
	stuffed := bytes.ReplaceAll(data, []byte("\r\n."), []byte("\r\n.."))
	if bytes.HasPrefix(stuffed, []byte(".")) {
		stuffed = append([]byte("."), stuffed...)
	}
	if !bytes.HasSuffix(stuffed, []byte("\r\n")) {
		stuffed = append(stuffed, "\r\n"...)
	}
	return send(string(stuffed) + ".\r\n")
}

// TestFixturesThroughSMTP sends every attack and edge-case message of
// testdata/messages through a relay: the refused ones get the reply class
// of their rule and are not queued; the valid ones are.
func TestFixturesThroughSMTP(t *testing.T) {
	t.Parallel()
	index, err := os.ReadFile("../testdata/messages/index.tsv")
	if err != nil {
		t.Fatal(err)
	}
	ca := certstest.NewCA(t)
	cfg := newTestConfig(t, ca, "127.0.0.1:1")
	cfg.Policy.AllowAnyFrom = true
	cfg.Limits.PerSender.Rate, cfg.Limits.PerClient.Rate = Rate{}, Rate{}
	env := startRelay(t, cfg, nil)
	accepted := 0
	for _, line := range strings.Split(string(index), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, "\t")
		file, smtputf8, want := fields[0], fields[1] == "1", fields[2]
		t.Run(file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("../testdata/messages", file))
			if err != nil {
				t.Fatal(err)
			}
			if want == "header-syntax" && !bytes.HasSuffix(data, []byte("\n")) {
				t.Skip("SMTP ends DATA with CRLF, which completes this header's last line")
			}
			got := rawSubmit(t, env.addr, "app@example.com", "ops@example.net", smtputf8, data)
			switch want {
			case "ok":
				if !strings.HasPrefix(got, "250 2.0.0 OK: queued as ") {
					t.Errorf("valid message refused: %q", got)
				}
				accepted++
			case "bare-lf", "bare-cr", "nul-byte":
				if !strings.HasPrefix(got, "554 5.6.0 ") {
					t.Errorf("reply %q, want 554 5.6.0 for %s", got, want)
				}
			default:
				if !strings.HasPrefix(got, "550 5.6.0 ") || !strings.Contains(got, "rule "+want) {
					t.Errorf("reply %q, want 550 5.6.0 naming rule %s", got, want)
				}
			}
		})
	}
	env.stop()
	assertQueueLen(t, cfg, accepted)
}

func TestRateLimitPerSender(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	up := tlsUpstream(t, ca)
	cfg := newTestConfig(t, ca, up.Addr())
	cfg.Limits.PerSender = RateLimit{Rate: Rate{Events: 1, Per: time.Minute}, Burst: 2}
	clock := fakeclock.New(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	logs := &syncBuffer{}
	r, err := New(cfg, Options{Logger: NewLogger(logs, cfg.Log), Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	env := runRelay(t, r, cfg, logs)
	for i := range 2 {
		if _, err := send(t, env.addr, "cron@example.com", []string{"ops@example.net"}, testBody); err != nil {
			t.Fatalf("message %d within the burst refused: %v", i+1, err)
		}
	}
	// Case games do not buy a fresh bucket.
	_, err = send(t, env.addr, "CRON@example.com", []string{"ops@example.net"}, testBody)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 7, 1}) || !strings.Contains(se.Message, "try again in 1m0s") {
		t.Fatalf("over the limit: %v, want 451 4.7.1 saying when to retry", err)
	}
	if _, err := send(t, env.addr, "other@example.com", []string{"ops@example.net"}, testBody); err != nil {
		t.Errorf("another sender is limited too: %v", err)
	}
	clock.Advance(time.Minute)
	if _, err := send(t, env.addr, "cron@example.com", []string{"ops@example.net"}, testBody); err != nil {
		t.Errorf("after a minute the bucket has a token again: %v", err)
	}
	rec := logs.waitRecord(t, "rejected", 1)
	if rec[0]["rule"] != "rate-per-sender" {
		t.Errorf("rejected record = %v", rec[0])
	}
	up.Expect(t, 4)
}

func TestSenderAndFromDomainRules(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	cfg := newTestConfig(t, ca, "127.0.0.1:1")
	cfg.Policy.AllowedSenders = []string{"*@example.com"}
	env := startRelay(t, cfg, nil)
	for _, tc := range []struct {
		from, body, want string
	}{
		{"app@evil.test", testBody, "550 5.7.1"},
		{"app@example.com", strings.Replace(testBody, "From: app@example.com", "From: ceo@bank.test", 1), "550 5.7.1"},
		{"app@example.com", testBody, "250 2.0.0"},
		{"app@exa_mple.com", testBody, "501 5.1.7"},
	} {
		got := rawSubmit(t, env.addr, tc.from, "ops@example.net", false, []byte(tc.body))
		if !strings.HasPrefix(got, tc.want) {
			t.Errorf("MAIL FROM:<%s>: %q, want %s", tc.from, got, tc.want)
		}
	}
	rules := map[string]bool{}
	for _, rec := range env.logs.records("rejected") {
		rules[rec["rule"].(string)] = true
	}
	for _, want := range []string{"sender-not-allowed", "from-domain-not-allowed", "envelope-address"} {
		if !rules[want] {
			t.Errorf("no rejected record with rule %s: %v", want, rules)
		}
	}
}

func TestReportModeFlagsButDelivers(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	up := tlsUpstream(t, ca)
	cfg := newTestConfig(t, ca, up.Addr())
	cfg.Policy.Mode = "report"
	env := startRelay(t, cfg, nil)
	dup := strings.Replace(testBody, "Subject: disk almost full\r\n", "Subject: disk almost full\r\nSubject: again\r\n", 1)
	if got := rawSubmit(t, env.addr, "app@example.com", "ops@example.net", false, []byte(dup)); !strings.HasPrefix(got, "250 ") {
		t.Errorf("report mode refused a duplicate Subject: %q", got)
	}
	flagged := env.logs.waitRecord(t, "flagged", 1)
	if flagged[0]["rule"] != "duplicate-field" {
		t.Errorf("flagged record = %v", flagged[0])
	}
	// Smuggling is refused whatever the mode.
	bare := strings.Replace(testBody, "/var is at 91%.\r\n", "/var is at 91%.\n.\r\nMAIL FROM:<x@example.com>\r\n", 1)
	if got := rawSubmit(t, env.addr, "app@example.com", "ops@example.net", false, []byte(bare)); !strings.HasPrefix(got, "554 5.6.0 ") {
		t.Errorf("report mode let a bare LF through: %q", got)
	}
	up.Expect(t, 1)
}

// TestHeaderEdits: Bcc never leaves the host (its recipient is in the
// envelope); Date and Message-ID are added only when missing.
func TestHeaderEdits(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	up := tlsUpstream(t, ca)
	env := startRelay(t, newTestConfig(t, ca, up.Addr()), nil)
	body := "From: app@example.com\r\nTo: ops@example.net\r\nBcc: audit@example.net\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <keep@example.com>\r\nSubject: s\r\n\r\nx\r\n"
	if _, err := send(t, env.addr, "app@example.com", []string{"ops@example.net", "audit@example.net"}, body); err != nil {
		t.Fatal(err)
	}
	got := up.Expect(t, 1)[0]
	if strings.Join(got.To, ",") != "ops@example.net,audit@example.net" {
		t.Errorf("envelope recipients %v", got.To)
	}
	data := string(got.Data)
	if strings.Contains(data, "Bcc:") || strings.Contains(data, "audit@example.net") {
		t.Errorf("Bcc left the host:\n%s", data)
	}
	if strings.Count(data, "Date:") != 1 || strings.Count(data, "Message-ID:") != 1 || !strings.Contains(data, "Message-ID: <keep@example.com>") {
		t.Errorf("Date/Message-ID changed although present:\n%s", data)
	}
}

// unsignedRefusedConfig is a configuration that signs for example.com
// only and refuses unsigned mail, and a body From a domain it allows but
// has no key for: refused after the message got its queue id.
func unsignedRefusedConfig(t *testing.T) (cfg *Config, body string) {
	t.Helper()
	cfg = newTestConfig(t, certstest.NewCA(t), "127.0.0.1:1")
	cfg.DKIM.Keys = []DKIMKey{{Domain: "example.com", Selector: "s1", KeyFile: writeKey(t, mustEd25519(t))}}
	cfg.DKIM.Unsigned = "reject"
	cfg.Policy.AllowedFromDomains = []string{"other.example.org"}
	return cfg, strings.Replace(testBody, "From: app@example.com", "From: app@other.example.org", 1)
}

func TestUnsignedMessageRefusedWhenKeysExist(t *testing.T) {
	t.Parallel()
	cfg, body := unsignedRefusedConfig(t)
	env := startRelay(t, cfg, nil)
	got := rawSubmit(t, env.addr, "app@example.com", "ops@example.net", false, []byte(body))
	if !strings.HasPrefix(got, "550 5.7.1 ") || !strings.Contains(got, "dkim-no-key") {
		t.Errorf("unsigned message: %q, want 550 5.7.1 (dkim-no-key)", got)
	}
	if got := rawSubmit(t, env.addr, "app@example.com", "ops@example.net", false, []byte(testBody)); !strings.HasPrefix(got, "250 ") {
		t.Errorf("signed message refused: %q", got)
	}
}

// TestSlowClientCannotHoldDATA: a client that stops sending mid-DATA is
// cut off at data_timeout and nothing is queued.
func TestSlowClientCannotHoldDATA(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	cfg := newTestConfig(t, ca, "127.0.0.1:1")
	cfg.Listen.DataTimeout = Duration(time.Second)
	env := startRelay(t, cfg, nil)
	c := dialRelay(t, env.addr)
	br := bufio.NewReader(c)
	for _, cmd := range []string{"", "EHLO x\r\n", "MAIL FROM:<app@example.com>\r\n", "RCPT TO:<ops@example.net>\r\n", "DATA\r\n", "From: app@example.com\r\n"} {
		if cmd != "" {
			c.Write([]byte(cmd))
		}
		if cmd == "From: app@example.com\r\n" {
			break
		}
		for {
			line, err := br.ReadString('\n')
			if err != nil || len(line) < 4 || line[3] != '-' {
				break
			}
		}
	}
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	restBytes, err := io.ReadAll(br)
	rest := string(restBytes)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the relay kept a stalled DATA open for 20s")
	}
	if !strings.HasPrefix(rest, "421 4.4.2 ") {
		t.Errorf("stalled DATA: %q, want 421 4.4.2 and the connection closed", rest)
	}
	env.stop()
	assertQueueLen(t, cfg, 0)
}

func TestReloadSwapsRules(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	cfg := newTestConfig(t, ca, "127.0.0.1:1")
	env := startRelay(t, cfg, nil)
	if got := rawSubmit(t, env.addr, "app@example.com", "ops@example.net", false, []byte(testBody)); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("before reload: %q", got)
	}
	next := *cfg
	next.Policy.AllowedSenders = []string{"cron@example.com"}
	if err := env.relay.Reload(&next); err != nil {
		t.Fatal(err)
	}
	if got := rawSubmit(t, env.addr, "app@example.com", "ops@example.net", false, []byte(testBody)); !strings.HasPrefix(got, "550 5.7.1 ") {
		t.Errorf("after reload: %q, want the new sender rule applied", got)
	}
	broken := next
	broken.DKIM.Keys = []DKIMKey{{Domain: "example.com", Selector: "s1", KeyFile: filepath.Join(t.TempDir(), "missing.key")}}
	if err := env.relay.Reload(&broken); err == nil {
		t.Error("reload with a missing key file succeeded")
	}
	if got := rawSubmit(t, env.addr, "cron@example.com", "ops@example.net", false, []byte(testBody)); !strings.HasPrefix(got, "250 ") {
		t.Errorf("after a failed reload the previous rules should hold: %q", got)
	}
}

func mustEd25519(t *testing.T) crypto.Signer {
	k, err := certs.GenerateDKIMKey("ed25519", 0)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestRefusedMessagesGiveBackTheirFiles: a message refused after it got
// its queue id (here: unsigned, with signing required) gives the spool
// back the empty file made ready for it; otherwise every refusal would
// leave one in the spool until the next restart.
func TestRefusedMessagesGiveBackTheirFiles(t *testing.T) {
	t.Parallel()
	cfg, body := unsignedRefusedConfig(t)
	// Many messages from one sender, quickly: not what is tested here.
	cfg.Limits.PerSender = RateLimit{Rate: Rate{Events: 6000, Per: time.Minute}, Burst: 1000}
	cfg.Limits.PerClient = cfg.Limits.PerSender
	cfg.Listen.MaxConnectionsPerClient = 1000
	revalidate(t, cfg)
	env := startRelay(t, cfg, nil)
	const refused = 2 * readyBodyFiles
	for i := range refused {
		if got := rawSubmit(t, env.addr, "app@example.com", "ops@example.net", false, []byte(body)); !strings.HasPrefix(got, "550 5.7.1 ") {
			t.Fatalf("unsigned message %d: %q, want 550 5.7.1", i, got)
		}
	}
	entries, err := os.ReadDir(filepath.Join(cfg.Spool.Dir, "body"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) > readyBodyFiles {
		t.Errorf("%d files in body/ after %d refused messages and none accepted, want at most the %d kept ready", len(entries), refused, readyBodyFiles)
	}
}

// TestLeftoverFilesLoggedByWhatTheyHeld: after a crash, the empty files
// made ready for messages are removed at info level (a crash always
// leaves some, and nothing of a message was in them); a file with part of
// a message in it and no metadata, a submission cut off, stays a warning.
func TestLeftoverFilesLoggedByWhatTheyHeld(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	cfg := newTestConfig(t, ca, "127.0.0.1:1")
	sp, err := spool.Open(cfg.Spool.Dir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	empty, cut := sp.NewID(), sp.NewID()
	sp.Close()
	for id, content := range map[spool.ID]string{empty: "", cut: "Subject: cut off\r\n\r\nhalf a bo"} {
		if err := os.WriteFile(filepath.Join(cfg.Spool.Dir, "body", string(id)+".eml"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env := startRelay(t, cfg, nil)
	levels := map[string]string{}
	deadline := time.Now().Add(15 * time.Second)
	for len(levels) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("removed-temp records for %v only; log:\n%s", levels, env.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
		for _, line := range strings.Split(env.logs.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "spool: removed-temp" {
				levels[rec["queue_id"].(string)] = rec["level"].(string)
			}
		}
	}
	if got := levels[string(empty)]; got != "INFO" {
		t.Errorf("empty leftover logged at %s, want INFO", got)
	}
	if got := levels[string(cut)]; got != "WARN" {
		t.Errorf("cut-off submission logged at %s, want WARN", got)
	}
}
