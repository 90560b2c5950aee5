package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"sealpost/certs"
	"sealpost/certs/certstest"
	"sealpost/upstream/upstreamtest"
)

const (
	testUser     = "relay@example.com"
	testPassword = "s3cret-Upstream-Passw0rd"
)

// testEnv is one relay under test with its own CA, spool and log.
type testEnv struct {
	t     testing.TB
	ca    *certs.CA
	cfg   *Config
	logs  *syncBuffer
	relay *Relay
	addr  string
	stop  func()
}

// newTestConfig returns a valid configuration for a relay on a free
// loopback port that trusts ca and logs in as testUser with a 0600
// password file.
func newTestConfig(t testing.TB, ca *certs.CA, upstreamAddr string) *Config {
	t.Helper()
	dir := t.TempDir()
	pw := filepath.Join(dir, "upstream.password")
	if err := os.WriteFile(pw, []byte(testPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Defaults()
	cfg.Hostname = "relay.test"
	cfg.Listen.Addrs = []ListenAddr{{Host: "127.0.0.1", Port: "0"}}
	cfg.Listen.Socket = ""
	cfg.Upstream.Addr = upstreamAddr
	cfg.Upstream.CAFile = certstest.WriteCAFile(t, ca)
	cfg.Upstream.Username = testUser
	cfg.Upstream.PasswordFile = pw
	cfg.Upstream.DialTimeout = Duration(5 * time.Second)
	cfg.Upstream.CommandTimeout = Duration(10 * time.Second)
	cfg.Spool.Dir = filepath.Join(dir, "spool")
	cfg.Spool.RetryIntervals = []Duration{Duration(time.Hour)}
	cfg.Policy.AllowedFromDomains = []string{"example.com", "*.example.com"}
	cfg.Log.Format = "json"
	cfg.Log.Level = -4 // debug: the secret must not leak even there
	cfg.Path = "(test)"
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startRelay starts a relay with cfg and stops it when the test ends. The
// captured log is checked for the test password at the end of every test.
func startRelay(t *testing.T, cfg *Config, logs *syncBuffer) *testEnv {
	t.Helper()
	if logs == nil {
		logs = &syncBuffer{}
	}
	r, err := New(cfg, Options{Logger: NewLogger(logs, cfg.Log), ShutdownGrace: 5 * time.Second})
	if err != nil {
		t.Fatalf("relay.New: %v", err)
	}
	return runRelay(t, r, cfg, logs)
}

// runRelay runs r until the test ends (or stop is called).
func runRelay(t testing.TB, r *Relay, cfg *Config, logs *syncBuffer) *testEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("relay.Run: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Errorf("relay did not stop within 20s")
			}
		})
	}
	t.Cleanup(func() {
		stop()
		if strings.Contains(logs.String(), testPassword) {
			t.Errorf("the upstream password appears in the log:\n%s", logs.String())
		}
	})
	return &testEnv{t: t, cfg: cfg, logs: logs, relay: r, addr: r.Addrs()[0].String(), stop: stop}
}

// send submits one message over SMTP and returns the server's final reply.
func send(t *testing.T, addr, from string, to []string, body string) (string, error) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatalf("dial relay: %v", err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return "", err
	}
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	for _, rcpt := range to {
		if err := c.Rcpt(rcpt, nil); err != nil {
			return "", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := io.WriteString(w, body); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	c.Quit()
	return resp.StatusText, nil
}

const testBody = "From: app@example.com\r\nTo: ops@example.net\r\nSubject: disk almost full\r\n\r\n/var is at 91%.\r\n"

// syncBuffer is a log destination safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// records returns the JSON log records whose "event" field is event.
func (b *syncBuffer) records(event string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(b.String(), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["event"] == event {
			out = append(out, rec)
		}
	}
	return out
}

// waitRecord waits (bounded) until the log holds n records of event.
func (b *syncBuffer) waitRecord(t *testing.T, event string, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		recs := b.records(event)
		if len(recs) >= n {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 15s for %d %q records, got %d; log:\n%s", n, event, len(recs), b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tlsUpstream starts an upstream that requires STARTTLS and AUTH, with a
// certificate from ca for 127.0.0.1.
func tlsUpstream(t testing.TB, ca *certs.CA) *upstreamtest.Server {
	return upstreamtest.New(t, upstreamtest.Options{
		TLS:         upstreamtest.TLSStartTLS,
		Certificate: certstest.Leaf(t, ca, "127.0.0.1", "localhost"),
		Users:       map[string]string{testUser: testPassword},
	})
}

// noCommandsAfterConnect asserts the upstream never saw AUTH, MAIL, RCPT or
// DATA: what must hold whenever TLS could not be established.
func noCommandsAfterConnect(t *testing.T, up *upstreamtest.Server) {
	t.Helper()
	for _, c := range up.Commands() {
		switch c.Verb {
		case "AUTH", "MAIL", "RCPT", "DATA", "BDAT":
			t.Errorf("upstream received %s (TLS up: %v) although TLS was not established", c.Verb, c.TLS)
		}
	}
}

var _ = tls.VersionTLS12
