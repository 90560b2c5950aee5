package main

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sealpost/certs"
)

func runDKIM(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = cmdDKIM(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

var valueLine = regexp.MustCompile(`(?m)^value:\s+(.*)$`)
var quotedLine = regexp.MustCompile(`(?m)^quoted:\s+(.*)$`)

// publicKeyOf parses a printed record the way a verifier would and returns
// its public key.
func publicKeyOf(t *testing.T, record string) any {
	t.Helper()
	tags := map[string]string{}
	for _, kv := range strings.Split(record, ";") {
		k, v, _ := strings.Cut(kv, "=")
		tags[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	if tags["v"] != "DKIM1" {
		t.Fatalf("record %q lacks v=DKIM1", record)
	}
	der, err := base64.StdEncoding.DecodeString(tags["p"])
	if err != nil {
		t.Fatalf("p= of %q: %v", record, err)
	}
	switch tags["k"] {
	case "rsa":
		pub, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			t.Fatal(err)
		}
		return pub
	case "ed25519":
		return ed25519.PublicKey(der)
	}
	t.Fatalf("record %q: k=%q", record, tags["k"])
	return nil
}

// checkPrintedRecord checks that the record printed (plain and as quoted
// 255-byte strings) publishes the public half of the key in keyFile.
func checkPrintedRecord(t *testing.T, out, keyFile string) {
	t.Helper()
	key, err := certs.LoadDKIMKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	m := valueLine.FindStringSubmatch(out)
	q := quotedLine.FindStringSubmatch(out)
	if m == nil || q == nil {
		t.Fatalf("no value:/quoted: line in:\n%s", out)
	}
	record := m[1]
	strs := strings.Split(strings.Trim(q[1], `"`), `" "`)
	for _, s := range strs {
		if len(s) > 255 {
			t.Errorf("quoted string of %d bytes", len(s))
		}
	}
	if strings.Join(strs, "") != record {
		t.Errorf("the quoted strings do not join to the record")
	}
	pub := publicKeyOf(t, record)
	if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
		t.Errorf("printed p= does not match the key in %s", keyFile)
	}
}

func TestDKIMKeygen(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		kind string
	}{
		{nil, "2048-bit RSA"},
		{[]string{"-algo", "rsa", "-bits", "3072"}, "3072-bit RSA"},
		{[]string{"-algo", "ed25519"}, "Ed25519"},
	} {
		t.Run(tt.kind, func(t *testing.T) {
			t.Parallel()
			out := filepath.Join(t.TempDir(), "example.com.key")
			args := append([]string{"keygen", "-domain", "Example.com", "-selector", "s2026", "-out", out}, tt.args...)
			code, stdout, stderr := runDKIM(args...)
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			st, err := os.Stat(out)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("key file mode %04o, want 0600", st.Mode().Perm())
			}
			for _, want := range []string{
				"name:   s2026._domainkey.example.com\n",
				tt.kind,
				"zone:   s2026._domainkey.example.com. IN TXT ( \"v=DKIM1; k=",
				"[[dkim.keys]]",
				`domain = "example.com"`,
				`selector = "s2026"`,
				`key_file = "` + out + `"`,
			} {
				if !strings.Contains(stdout, want) {
					t.Errorf("output lacks %q:\n%s", want, stdout)
				}
			}
			checkPrintedRecord(t, stdout, out)
			if _, ok := mustLoadKey(t, out).(*rsa.PrivateKey); ok != strings.Contains(tt.kind, "RSA") {
				t.Errorf("wrong key type written for %s", tt.kind)
			}
		})
	}
}

func mustLoadKey(t *testing.T, path string) any {
	t.Helper()
	k, err := certs.LoadDKIMKey(path)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestDKIMKeygenNeverOverwrites(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "k.key")
	if code, _, stderr := runDKIM("keygen", "-domain", "example.com", "-selector", "a", "-algo", "ed25519", "-out", out); code != exitOK {
		t.Fatalf("first keygen: exit %d: %s", code, stderr)
	}
	before, _ := os.ReadFile(out)
	code, stdout, stderr := runDKIM("keygen", "-domain", "example.com", "-selector", "b", "-algo", "ed25519", "-out", out)
	if code != exitCantCreate {
		t.Errorf("second keygen: exit %d, want %d", code, exitCantCreate)
	}
	if !strings.Contains(stderr, out) || !strings.Contains(stderr, "already exists") {
		t.Errorf("stderr %q does not say the file exists", stderr)
	}
	if strings.Contains(stdout, "v=DKIM1") {
		t.Error("a record was printed for a key that was not written")
	}
	after, _ := os.ReadFile(out)
	if !bytes.Equal(before, after) {
		t.Error("the first key was changed")
	}
}

func TestDKIMUsageErrors(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "k.key")
	base := []string{"keygen", "-domain", "example.com", "-selector", "s1", "-out", out}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "missing subcommand"},
		{[]string{"rotate"}, `unknown subcommand "rotate"`},
		{append(base, "-algo", "dsa"), `-algo "dsa"`},
		{append(base, "-bits", "1024"), "-bits 1024"},
		{append(base, "-bits", "8192"), "-bits 8192"},
		{append(base, "-algo", "ed25519", "-bits", "2048"), "RSA keys only"},
		{[]string{"keygen", "-selector", "s1", "-out", out}, "-domain is required"},
		{[]string{"keygen", "-domain", "example.com", "-out", out}, "-selector is required"},
		{[]string{"keygen", "-domain", "example.com", "-selector", "s1"}, "-out is required"},
		{[]string{"keygen", "-domain", "exa mple.com", "-selector", "s1", "-out", out}, "not a domain name"},
		{[]string{"keygen", "-domain", "example.com", "-selector", "s_1;", "-out", out}, "-selector"},
		{append(base, "extra"), `unexpected argument "extra"`},
		{[]string{"keygen", "-nope"}, "flag provided but not defined"},
		{[]string{"records", "extra"}, `unexpected argument "extra"`},
	} {
		code, _, stderr := runDKIM(tt.args...)
		if code != exitUsage {
			t.Errorf("%q: exit %d, want %d", tt.args, code, exitUsage)
		}
		if !strings.Contains(stderr, tt.want) {
			t.Errorf("%q: stderr lacks %q:\n%s", tt.args, tt.want, stderr)
		}
		if len(tt.args) > 0 && tt.args[0] == "keygen" && !strings.Contains(stderr, "-selector") {
			t.Errorf("%q: no usage on stderr:\n%s", tt.args, stderr)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a usage error wrote a key")
	}
}

// writeRecordsConfig writes a configuration whose [[dkim.keys]] are keys.
func writeRecordsConfig(t *testing.T, dir, keys string) string {
	t.Helper()
	cfg := fmt.Sprintf(`
[upstream]
addr = "smtp.example.com:587"
username = "relay@example.com"
password_file = %q

[spool]
dir = %q

%s`, filepath.Join(dir, "pw"), filepath.Join(dir, "spool"), keys)
	path := filepath.Join(dir, "relay.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func keygen(t *testing.T, path, algo string) {
	t.Helper()
	if code, _, stderr := runDKIM("keygen", "-domain", "example.com", "-selector", "x", "-algo", algo, "-out", path); code != exitOK {
		t.Fatalf("keygen: %s", stderr)
	}
}

func TestDKIMRecords(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rsaKey, edKey := filepath.Join(dir, "rsa.key"), filepath.Join(dir, "ed.key")
	keygen(t, rsaKey, "rsa")
	keygen(t, edKey, "ed25519")
	cfg := writeRecordsConfig(t, dir, fmt.Sprintf(`
[[dkim.keys]]
domain = "example.com"
selector = "r2026"
key_file = %q

[[dkim.keys]]
domain = "example.com"
selector = "e2026"
key_file = %q
`, rsaKey, edKey))
	code, stdout, stderr := runDKIM("records", "-config", cfg)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	blocks := strings.Split(stdout, "\n\n")
	if len(blocks) != 2 {
		t.Fatalf("want two records:\n%s", stdout)
	}
	for i, want := range []struct{ name, file string }{{"r2026._domainkey.example.com", rsaKey}, {"e2026._domainkey.example.com", edKey}} {
		if !strings.Contains(blocks[i], "name:   "+want.name+"\n") {
			t.Errorf("record %d does not name %s:\n%s", i, want.name, blocks[i])
		}
		checkPrintedRecord(t, blocks[i], want.file)
	}
	if strings.Contains(stderr, "warning") {
		t.Errorf("RSA+Ed25519 produced a warning: %s", stderr)
	}
}

func TestDKIMRecordsErrors(t *testing.T) {
	t.Parallel()
	t.Run("bad key", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		edKey, openKey := filepath.Join(dir, "ed.key"), filepath.Join(dir, "open.key")
		keygen(t, edKey, "ed25519")
		keygen(t, openKey, "ed25519")
		os.Chmod(openKey, 0o644)
		cfg := writeRecordsConfig(t, dir, fmt.Sprintf(`
[[dkim.keys]]
domain = "example.org"
selector = "s"
key_file = %q

[[dkim.keys]]
domain = "example.com"
selector = "s"
key_file = %q
`, openKey, edKey))
		code, stdout, stderr := runDKIM("records", "-config", cfg)
		if code != exitConfig {
			t.Errorf("exit %d, want %d", code, exitConfig)
		}
		for _, want := range []string{cfg, "dkim.keys[0]", openKey, "chmod 600", "Ed25519 alone; add an RSA key for example.com"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, stderr)
			}
		}
		if !strings.Contains(stdout, "s._domainkey.example.com") {
			t.Errorf("the good key's record is missing:\n%s", stdout)
		}
	})
	t.Run("bad config", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		cfg := writeRecordsConfig(t, dir, "[[dkim.keys]]\ndomain = \"example.com\"\n")
		code, _, stderr := runDKIM("records", "-config", cfg)
		if code != exitConfig || !strings.Contains(stderr, cfg) || !strings.Contains(stderr, "dkim.keys[0].selector") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
	t.Run("missing config", func(t *testing.T) {
		t.Parallel()
		code, _, _ := runDKIM("records", "-config", filepath.Join(t.TempDir(), "absent.toml"))
		if code != exitConfig {
			t.Errorf("exit %d, want %d", code, exitConfig)
		}
	})
}

// Not parallel: it sets the environment.
func TestDKIMRecordsUsesSealpostConfig(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "k.key")
	keygen(t, key, "rsa")
	cfg := writeRecordsConfig(t, dir, fmt.Sprintf("[[dkim.keys]]\ndomain = \"example.net\"\nselector = \"env\"\nkey_file = %q\n", key))
	t.Setenv("SEALPOST_CONFIG", cfg)
	code, stdout, stderr := runDKIM("records")
	if code != exitOK || !strings.Contains(stdout, "env._domainkey.example.net") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}
