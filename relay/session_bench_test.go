package relay

import (
	"bufio"
	"context"
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
	cfg.Log.Level = 4 // warn, as in production: audit records are not built for nothing
	cfg.Path = "(bench)"
	if err := cfg.validate(); err != nil {
		b.Fatal(err)
	}
	r, err := New(cfg, Options{Logger: NewLogger(&syncBuffer{}, cfg.Log), ShutdownGrace: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			b.Error("relay did not stop within 20s")
		}
	})
	return r.Addrs()[0].String()
}

// benchClient speaks just enough SMTP to time the server: one command, then
// every line of its reply.
type benchClient struct {
	b *testing.B
	c net.Conn
	r *bufio.Reader
}

func (bc *benchClient) reply(want string) {
	for {
		line, err := bc.r.ReadString('\n')
		if err != nil {
			bc.b.Fatalf("reading the reply: %v", err)
		}
		if !strings.HasPrefix(line, want) {
			bc.b.Fatalf("reply %q, want %s", line, want)
		}
		if len(line) < 4 || line[3] != '-' {
			return
		}
	}
}

func (bc *benchClient) cmd(line, want string) {
	if _, err := bc.c.Write([]byte(line)); err != nil {
		bc.b.Fatal(err)
	}
	bc.reply(want)
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
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		bc := &benchClient{b: b, c: c, r: bufio.NewReader(c)}
		bc.reply("220")
		bc.cmd("EHLO client.test\r\n", "250")
		bc.cmd("MAIL FROM:<app@example.com>\r\n", "250")
		bc.cmd("RCPT TO:<ops@example.net>\r\n", "250")
		bc.cmd("QUIT\r\n", "221")
		c.Close()
	}
}

// BenchmarkSessionCommands is the cost of one command on an open
// connection: MAIL, RCPT and RSET, round trip by round trip.
func BenchmarkSessionCommands(b *testing.B) {
	addr := benchRelay(b)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	bc := &benchClient{b: b, c: c, r: bufio.NewReader(c)}
	bc.reply("220")
	bc.cmd("EHLO client.test\r\n", "250")
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		bc.cmd("MAIL FROM:<app@example.com>\r\n", "250")
		bc.cmd("RCPT TO:<ops@example.net>\r\n", "250")
		bc.cmd("RSET\r\n", "250")
	}
}
