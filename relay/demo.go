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

	"github.com/emersion/go-msgauth/dkim"

	"sealpost/certs"
	"sealpost/upstream/upstreamtest"
)

// DemoOptions configure `sealpost demo`.
type DemoOptions struct {
	Listen string    // loopback address for the relay; a busy port falls back to a free one
	Out    io.Writer // instructions and received messages
	Log    io.Writer // the relay's log
	// Command is how the user runs sealpost ("go run ." or the binary's
	// path), for the printed sendmail example.
	Command string
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

	keys, records, err := demoDKIMKeys(dir)
	if err != nil {
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
			printReceived(opts.Out, m, records)
		},
	})
	if err != nil {
		return fmt.Errorf("start the embedded upstream: %w", err)
	}
	defer up.Close()

	// The configuration is a real file, so `sealpost sendmail -config` can
	// find the demo's submission socket in it.
	cfgPath := filepath.Join(dir, "relay.toml")
	if err := os.WriteFile(cfgPath, demoConfig(dir, up.Addr(), caFile, passwordFile, keys), 0o600); err != nil {
		return err
	}
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		return fmt.Errorf("demo configuration: %w", err)
	}

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
  DKIM                      example.com signed with throwaway RSA-2048 and Ed25519 keys

Send a test message from another terminal, over SMTP:

  swaks --server %s --port %s --from app@example.com --to someone@example.net --header "Subject: hello from sealpost"

or as a legacy program would, through the sendmail command:

  printf 'Subject: hello via sendmail\n\nIt works.\n' | %s sendmail -config %s -f app@example.com someone@example.net

Each message the upstream receives is printed below. Ctrl-C stops and removes everything.

`, addr, cfg.Spool.Dir, up.Addr(), demoUser, host, port, opts.Command, cfgPath)
	return r.Run(ctx)
}

// demoConfig writes the demo's configuration as TOML.
func demoConfig(dir, upstreamAddr, caFile, passwordFile string, keys []DKIMKey) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "hostname = \"demo.sealpost.test\"\n\n[listen]\nsocket = %q\n\n", filepath.Join(dir, "submit.sock"))
	fmt.Fprintf(&b, "[upstream]\naddr = %q\nca_file = %q\nusername = %q\npassword_file = %q\n\n", upstreamAddr, caFile, demoUser, passwordFile)
	fmt.Fprintf(&b, "[spool]\ndir = %q\n\n[dkim]\nunsigned = \"relay\"\n\n", filepath.Join(dir, "spool"))
	for _, k := range keys {
		fmt.Fprintf(&b, "[[dkim.keys]]\ndomain = %q\nselector = %q\nkey_file = %q\n\n", k.Domain, k.Selector, k.KeyFile)
	}
	b.WriteString("[policy]\nallowed_from_domains = [\"*.example.com\"]\n")
	return []byte(b.String())
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

// demoDKIMKeys makes throwaway RSA and Ed25519 keys for example.com, the
// sender domain the printed swaks command uses, so the demo shows signed
// mail. It returns their configuration and DNS records.
func demoDKIMKeys(dir string) ([]DKIMKey, map[string]string, error) {
	records := map[string]string{}
	var keys []DKIMKey
	for _, k := range []struct{ algo, selector string }{{"rsa", "demo-rsa"}, {"ed25519", "demo-ed25519"}} {
		key, err := certs.GenerateDKIMKey(k.algo, 0)
		if err != nil {
			return nil, nil, err
		}
		path := filepath.Join(dir, k.selector+".key")
		if err := certs.WriteDKIMKey(path, key); err != nil {
			return nil, nil, err
		}
		record, err := certs.DKIMRecord(key.Public())
		if err != nil {
			return nil, nil, err
		}
		records[certs.DKIMRecordName(k.selector, "example.com")] = record
		keys = append(keys, DKIMKey{Domain: "example.com", Selector: k.selector, KeyFile: path})
	}
	return keys, records, nil
}

func printReceived(w io.Writer, m upstreamtest.Received, records map[string]string) {
	header, _, _ := bytes.Cut(m.Data, []byte("\r\n\r\n"))
	fmt.Fprintf(w, "──── upstream received a message ────\n")
	fmt.Fprintf(w, "  MAIL FROM:<%s>\n", m.From)
	for _, rcpt := range m.To {
		fmt.Fprintf(w, "  RCPT TO:<%s>\n", rcpt)
	}
	fmt.Fprintf(w, "  TLS: %s   AUTH: %s as %s   size: %d bytes\n", tls.VersionName(m.TLSVersion), m.AuthMechanism, m.AuthUser, len(m.Data))
	verifications, err := dkim.VerifyWithOptions(bytes.NewReader(m.Data), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if r, ok := records[strings.TrimSuffix(name, ".")]; ok {
				return []string{r}, nil
			}
			return nil, fmt.Errorf("no TXT record at %s", name)
		},
	})
	switch {
	case err != nil:
		fmt.Fprintf(w, "  DKIM: cannot verify: %v\n", err)
	case len(verifications) == 0:
		fmt.Fprintf(w, "  DKIM: not signed\n")
	}
	for _, v := range verifications {
		result := "pass"
		if v.Err != nil {
			result = "FAIL: " + v.Err.Error()
		}
		fmt.Fprintf(w, "  DKIM: %s (d=%s)\n", result, v.Domain)
	}
	fmt.Fprintf(w, "  headers:\n")
	for _, line := range strings.Split(string(header), "\r\n") {
		fmt.Fprintf(w, "    %s\n", line)
	}
	fmt.Fprintln(w)
}
