package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"sealpost/certs"
	"sealpost/upstream/upstreamtest"
)

// DemoOptions configure `sealpost demo`.
type DemoOptions struct {
	Listen string    // loopback address for the relay; a busy port falls back to a free one
	Out    io.Writer // instructions and received messages
	Log    io.Writer // the relay's log
}

const demoUser = "demo@sealpost.test"

// RunDemo runs the real pipeline on loopback: the relay, a spool in a
// temporary directory, and an embedded upstream that requires STARTTLS with
// a certificate from a throwaway CA (which the relay is told to trust) and
// AUTH. It prints how to send a test message and then every message the
// upstream receives. Everything is removed when ctx ends.
func RunDemo(ctx context.Context, opts DemoOptions) error {
	dir, err := os.MkdirTemp("", "sealpost-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	ca, err := certs.NewCA("sealpost demo CA (throwaway)")
	if err != nil {
		return err
	}
	leaf, err := ca.Issue("localhost", "127.0.0.1", "::1")
	if err != nil {
		return err
	}
	caFile := filepath.Join(dir, "upstream-ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o644); err != nil {
		return err
	}
	password := make([]byte, 16)
	rand.Read(password)
	passwordFile := filepath.Join(dir, "upstream.password")
	if err := os.WriteFile(passwordFile, []byte(hex.EncodeToString(password)+"\n"), 0o600); err != nil {
		return err
	}

	var printMu sync.Mutex
	up, err := upstreamtest.NewServer(upstreamtest.Options{
		TLS:         upstreamtest.TLSStartTLS,
		Certificate: leaf,
		Users:       map[string]string{demoUser: hex.EncodeToString(password)},
		OnMessage: func(m upstreamtest.Received) {
			printMu.Lock()
			defer printMu.Unlock()
			printReceived(opts.Out, m)
		},
	})
	if err != nil {
		return fmt.Errorf("start the embedded upstream: %w", err)
	}
	defer up.Close()

	cfg := Defaults()
	cfg.Hostname = "demo.sealpost.test"
	cfg.Listen.Socket = ""
	cfg.Upstream.Addr = up.Addr()
	cfg.Upstream.CAFile = caFile
	cfg.Upstream.Username = demoUser
	cfg.Upstream.PasswordFile = passwordFile
	cfg.Spool.Dir = filepath.Join(dir, "spool")
	cfg.Path = "(demo)"

	r, err := newDemoRelay(cfg, opts)
	if err != nil {
		return err
	}
	addr := r.Addrs()[0].String()
	host, port, _ := net.SplitHostPort(addr)
	fmt.Fprintf(opts.Out, `
sealpost demo is running.

  relay (you submit here)   %s   loopback only, spool in %s
  embedded upstream         %s   STARTTLS required (throwaway CA), AUTH as %s

Send a test message from another terminal:

  swaks --server %s --port %s --from app@example.com --to someone@example.net --header "Subject: hello from sealpost"

Each message the upstream receives is printed below. Ctrl-C stops and removes everything.

`, addr, cfg.Spool.Dir, up.Addr(), demoUser, host, port)
	return r.Run(ctx)
}

// newDemoRelay starts the relay on the requested address, or on a free
// loopback port when that one is taken (a second demo, or a local MTA).
func newDemoRelay(cfg *Config, opts DemoOptions) (*Relay, error) {
	logger := NewLogger(opts.Log, cfg.Log)
	var la ListenAddr
	if err := la.UnmarshalText([]byte(opts.Listen)); err != nil {
		return nil, err
	}
	if !la.Loopback() {
		return nil, fmt.Errorf("the demo listens on loopback only, not %s", la)
	}
	cfg.Listen.Addrs = []ListenAddr{la}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	r, err := New(cfg, Options{Logger: logger})
	if err != nil && errors.Is(err, syscall.EADDRINUSE) {
		fmt.Fprintf(opts.Out, "%s is in use; using a free port instead.\n", la)
		cfg.Listen.Addrs = []ListenAddr{{Host: la.Host, Port: "0"}}
		r, err = New(cfg, Options{Logger: logger})
	}
	return r, err
}

func printReceived(w io.Writer, m upstreamtest.Received) {
	header, _, _ := bytes.Cut(m.Data, []byte("\r\n\r\n"))
	fmt.Fprintf(w, "──── upstream received a message ────\n")
	fmt.Fprintf(w, "  MAIL FROM:<%s>\n", m.From)
	for _, rcpt := range m.To {
		fmt.Fprintf(w, "  RCPT TO:<%s>\n", rcpt)
	}
	fmt.Fprintf(w, "  TLS: %s   AUTH: %s as %s   size: %d bytes\n", tls.VersionName(m.TLSVersion), m.AuthMechanism, m.AuthUser, len(m.Data))
	fmt.Fprintf(w, "  headers:\n")
	for _, line := range strings.Split(string(header), "\r\n") {
		fmt.Fprintf(w, "    %s\n", line)
	}
	fmt.Fprintln(w)
}
