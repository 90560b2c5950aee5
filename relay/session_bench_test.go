package relay

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sealpost/certs/certstest"
)

// benchRelay starts a relay on loopback whose upstream does not answer, for
// measuring the SMTP server side alone: what a client pays before DATA.
// Nothing reaches the spool, so its fsyncs do not drown the numbers.
func benchRelay(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	pw := filepath.Join(dir, "upstream.password")
	if err := os.WriteFile(pw, []byte("bench\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	cfg := Defaults()
	cfg.Hostname = "relay.test"
	cfg.Listen.Addrs = []ListenAddr{{Host: "127.0.0.1", Port: "0"}}
	cfg.Listen.Socket = ""
	cfg.Upstream.Addr = "127.0.0.1:1"
	cfg.Upstream.CAFile = certstest.WriteCAFile(b, certstest.NewCA(b))
	cfg.Upstream.Username = "bench"
	cfg.Upstream.PasswordFile = pw
	cfg.Spool.Dir = filepath.Join(dir, "spool")
	cfg.Policy.AllowedFromDomains = []string{"example.com"}
	cfg.Limits.PerSender = RateLimit{}
	cfg.Limits.PerClient = RateLimit{}
	cfg.Log.Level = 4 // warn, as in the kit's runs: no audit records (BenchmarkAuditRecord measures them)
	cfg.Path = "(bench)"
	if err := cfg.validate(); err != nil {
		b.Fatal(err)
	}
	return runBenchRelay(b, cfg)
}

// runBenchRelay runs a relay with cfg until the benchmark ends and returns
// its SMTP address.
func runBenchRelay(b *testing.B, cfg *Config) string {
	b.Helper()
	logs := &syncBuffer{}
	r, err := New(cfg, Options{Logger: NewLogger(logs, cfg.Log), ShutdownGrace: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	return runRelay(b, r, cfg, logs).addr
}

// benchClient speaks just enough SMTP to time the server: one command, then
// every line of its reply. It returns errors rather than failing the
// benchmark, so that clients can run on goroutines of their own.
type benchClient struct {
	c net.Conn
	r *bufio.Reader
}

func dialBench(addr string) (*benchClient, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	// A relay that stops answering fails the benchmark instead of hanging
	// it (the longest use, a BenchmarkSessionCommands, takes seconds).
	if err := c.SetDeadline(time.Now().Add(2 * time.Minute)); err != nil {
		c.Close()
		return nil, err
	}
	bc := &benchClient{c: c, r: bufio.NewReader(c)}
	if err := bc.reply("220"); err != nil {
		c.Close()
		return nil, err
	}
	return bc, nil
}

func (bc *benchClient) reply(want string) error {
	for {
		line, err := bc.r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("reading the reply: %w", err)
		}
		if !strings.HasPrefix(line, want) {
			return fmt.Errorf("reply %q, want %s", line, want)
		}
		if len(line) < 4 || line[3] != '-' {
			return nil
		}
	}
}

func (bc *benchClient) cmd(line, want string) error {
	if _, err := bc.c.Write([]byte(line)); err != nil {
		return err
	}
	return bc.reply(want)
}

// cmds sends each command in turn and stops at the first that fails.
func (bc *benchClient) cmds(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if err := bc.cmd(pairs[i], pairs[i+1]); err != nil {
			return fmt.Errorf("%s: %w", strings.TrimSpace(pairs[i]), err)
		}
	}
	return nil
}

// BenchmarkSessionEnvelope is one client connection up to the point where
// the message would follow: connect, banner, EHLO (the peer lookup), MAIL,
// RCPT, QUIT. It is the per-connection and per-command overhead that every
// message pays on top of the spool.
func BenchmarkSessionEnvelope(b *testing.B) {
	addr := benchRelay(b)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		bc, err := dialBench(addr)
		if err != nil {
			b.Fatal(err)
		}
		err = bc.cmds("EHLO client.test\r\n", "250",
			"MAIL FROM:<app@example.com>\r\n", "250",
			"RCPT TO:<ops@example.net>\r\n", "250",
			"QUIT\r\n", "221")
		bc.c.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSessionCommands is the cost of one command on an open
// connection: MAIL, RCPT and RSET, round trip by round trip.
func BenchmarkSessionCommands(b *testing.B) {
	addr := benchRelay(b)
	bc, err := dialBench(addr)
	if err != nil {
		b.Fatal(err)
	}
	defer bc.c.Close()
	if err := bc.cmd("EHLO client.test\r\n", "250"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		err := bc.cmds("MAIL FROM:<app@example.com>\r\n", "250",
			"RCPT TO:<ops@example.net>\r\n", "250",
			"RSET\r\n", "250")
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuditRecord is the cost of a message's "received" audit record
// written as a JSON line to log.audit_file, as the daemon writes it before
// the 250. The kit's runs (bench/sealpost.sh) log at warn without an audit
// file, so their figures leave this out: two records a message (received,
// delivered) are this figure twice. Its fields are those session.Data
// records (session.go) for a local client with DKIM; keep them alike.
func BenchmarkAuditRecord(b *testing.B) {
	f, err := openReopenFile(filepath.Join(b.TempDir(), "audit.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	a := newAuditLog(slog.New(slog.NewJSONHandler(f, nil)))
	to := []string{"ops@example.net"}
	b.ReportAllocs()
	for b.Loop() {
		a.record("received",
			slog.String("queue_id", "20261127T111500-abcdefghij"),
			slog.String("client_ip", "127.0.0.1"),
			slog.String("helo", "app.example.com"),
			slog.String("mail_from", "cron@example.com"),
			slog.Any("rcpt", to),
			slog.Int64("size", 4096),
			slog.String("message_id", "<20261127111500.12345@app.example.com>"),
			slog.String("tls", ""),
			slog.Int64("duration_ms", 2),
			slog.String("local_user", "www-data"),
			slog.String("dkim", "d=example.com s=s2026 rsa-sha256"))
	}
}
