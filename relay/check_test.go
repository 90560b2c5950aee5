package relay

import (
	"context"
	"crypto"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"testing"

	"sealpost/certs"
	"sealpost/certs/certstest"
)

const checkSecret = "s3cret-app-password-8841"

// checkFixture is a host where every offline check passes: files with the
// right modes, owned by the user running the test.
type checkFixture struct {
	dir, passwordFile, spoolDir, keyFile, configFile string
	// extra is appended to the configuration's top level before any table.
	extra string
	// sections are appended after the generated tables.
	sections string
	upstream string
}

// RSA keys take a while to generate; one per test binary is enough.
var (
	rsaKeyOnce sync.Once
	rsaKey     crypto.Signer
)

func testRSAKey(t *testing.T) crypto.Signer {
	rsaKeyOnce.Do(func() {
		k, err := certs.GenerateDKIMKey("rsa", 2048)
		if err != nil {
			panic(err)
		}
		rsaKey = k
	})
	return rsaKey
}

func newCheckFixture(t *testing.T) *checkFixture {
	t.Helper()
	dir := t.TempDir()
	f := &checkFixture{
		dir:          dir,
		passwordFile: filepath.Join(dir, "upstream.password"),
		spoolDir:     filepath.Join(dir, "spool"),
		keyFile:      filepath.Join(dir, "example.com.key"),
		configFile:   filepath.Join(dir, "relay.toml"),
		upstream:     "smtp.example.com:587",
	}
	if err := os.WriteFile(f.passwordFile, []byte(checkSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(f.spoolDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := certs.WriteDKIMKey(f.keyFile, testRSAKey(t)); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *checkFixture) toml() string {
	return `hostname = "app01.example.com"
` + f.extra + `
[upstream]
addr = "` + f.upstream + `"
username = "relay@example.com"
password_file = "` + f.passwordFile + `"
[spool]
dir = "` + f.spoolDir + `"
[[dkim.keys]]
domain = "example.com"
selector = "s2026"
key_file = "` + f.keyFile + `"
[policy]
allowed_from_domains = ["example.com"]
` + f.sections
}

// load writes the configuration (mode 0640) and loads it.
func (f *checkFixture) load(t *testing.T) *Config {
	t.Helper()
	if err := os.WriteFile(f.configFile, []byte(f.toml()), 0o640); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(f.configFile)
	if err != nil {
		t.Fatalf("fixture configuration: %v", err)
	}
	return cfg
}

func intp(n int) *int { return &n }

func runCheck(t *testing.T, cfg *Config, opts CheckOptions) Report {
	t.Helper()
	if opts.Euid == nil {
		// Not root, so identity.root passes; the files belong to the
		// test's own user, which is the one compared against.
		e := os.Geteuid()
		if e == 0 {
			cfg.RunAsRoot = true
		}
		opts.Euid = intp(e)
	}
	if opts.Getenv == nil {
		opts.Getenv = func(string) string { return "" }
	}
	r := Check(context.Background(), cfg, opts)
	// Whatever else happens, the secret never appears in a report.
	js, _ := json.Marshal(r)
	if strings.Contains(string(js), checkSecret) {
		t.Fatalf("report contains the secret: %s", js)
	}
	return r
}

func findings(r Report, id string) []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.ID == id {
			out = append(out, f)
		}
	}
	return out
}

func want(t *testing.T, r Report, id string, st Status, contains string) Finding {
	t.Helper()
	fs := findings(r, id)
	if len(fs) == 0 {
		t.Fatalf("no %s finding; report: %+v", id, r.Findings)
	}
	for _, f := range fs {
		if f.Status == st && strings.Contains(f.Found+" "+f.Fix, contains) {
			return f
		}
	}
	t.Fatalf("%s: want %s containing %q, got %+v", id, st, contains, fs)
	return Finding{}
}

func TestCheckGoodHostPasses(t *testing.T) {
	t.Parallel()
	f := newCheckFixture(t)
	cfg := f.load(t)
	r := runCheck(t, cfg, CheckOptions{})
	for _, fd := range r.Findings {
		if fd.Status == StatusFail {
			t.Errorf("unexpected FAIL: %+v", fd)
		}
		if fd.Status == StatusWarn && fd.ID != "identity.root" {
			t.Errorf("unexpected WARN: %+v", fd)
		}
	}
	if !r.OK || r.Counts.Fail != 0 || r.Counts.Pass == 0 {
		t.Errorf("report = ok %v counts %+v", r.OK, r.Counts)
	}
	for _, id := range []string{"identity.root", "tls.mode", "tls.min_version", "tls.ca_file", "secrets.config", "secrets.source", "files.config", "files.spool", "dkim.key", "dkim.algorithms", "policy.mode", "policy.limits", "policy.listen", "audit.log", "build"} {
		if len(findings(r, id)) == 0 {
			t.Errorf("no %s finding", id)
		}
	}
	if len(findings(r, "dns.spf")) != 0 || len(findings(r, "live.tls")) != 0 {
		t.Error("DNS or live checks ran without being asked for")
	}
}

func TestCheckOffline(t *testing.T) {
	t.Parallel()
	asRoot := os.Geteuid() == 0
	tests := []struct {
		name     string
		rootOnly bool
		setup    func(t *testing.T, f *checkFixture)
		opts     func(o *CheckOptions)
		cfg      func(c *Config)
		id       string
		status   Status
		contains string
	}{
		{name: "root refused", opts: func(o *CheckOptions) { o.Euid = intp(0) }, cfg: func(c *Config) { c.RunAsRoot = false },
			id: "identity.root", status: StatusFail, contains: "sealpost.service"},
		{name: "root allowed", opts: func(o *CheckOptions) { o.Euid = intp(0) }, cfg: func(c *Config) { c.RunAsRoot = true },
			id: "identity.root", status: StatusWarn, contains: "run_as_root = true"},
		{name: "not root", opts: func(o *CheckOptions) { o.Euid = intp(998) },
			id: "identity.root", status: StatusPass, contains: "not root"},
		{name: "starttls on 465", setup: func(t *testing.T, f *checkFixture) { f.upstream = "smtp.example.com:465" },
			id: "tls.mode", status: StatusWarn, contains: "implicit"},
		{name: "system roots", id: "tls.ca_file", status: StatusPass, contains: "system roots"},
		{name: "ca file garbage", cfg: func(c *Config) {
			c.Upstream.CAFile = filepath.Join(filepath.Dir(c.Spool.Dir), "upstream.password")
		}, id: "tls.ca_file", status: StatusFail, contains: "no certificate"},
		{name: "ca file missing", cfg: func(c *Config) { c.Upstream.CAFile = "/nonexistent/ca.pem" },
			id: "tls.ca_file", status: StatusFail, contains: "no such file"},
		{name: "password file readable by others", setup: func(t *testing.T, f *checkFixture) { chmod(t, f.passwordFile, 0o644) },
			id: "secrets.source", status: StatusFail, contains: "chmod 600"},
		{name: "password file missing", setup: func(t *testing.T, f *checkFixture) { os.Remove(f.passwordFile) },
			id: "secrets.source", status: StatusFail, contains: "no such file"},
		{name: "password file empty", setup: func(t *testing.T, f *checkFixture) { os.WriteFile(f.passwordFile, []byte("\n"), 0o600) },
			id: "secrets.source", status: StatusFail, contains: "empty"},
		{name: "password file of another user", rootOnly: true, setup: func(t *testing.T, f *checkFixture) { chown(t, f.passwordFile, 65534) },
			id: "secrets.source", status: StatusWarn, contains: "uid 65534"},
		{name: "password env set", cfg: func(c *Config) { c.Upstream.PasswordFile, c.Upstream.PasswordEnv = "", "SEALPOST_PW" },
			opts: func(o *CheckOptions) {
				o.Getenv = func(k string) string {
					if k == "SEALPOST_PW" {
						return checkSecret
					}
					return ""
				}
			}, id: "secrets.source", status: StatusPass, contains: "SEALPOST_PW is set"},
		{name: "password env unset", cfg: func(c *Config) { c.Upstream.PasswordFile, c.Upstream.PasswordEnv = "", "SEALPOST_PW" },
			id: "secrets.source", status: StatusFail, contains: "not set"},
		{name: "password command works", cfg: func(c *Config) {
			c.Upstream.PasswordFile, c.Upstream.PasswordCommand = "", []string{"/bin/sh", "-c", "echo " + checkSecret}
		}, id: "secrets.source", status: StatusPass, contains: "printed a secret"},
		{name: "password command missing", cfg: func(c *Config) {
			c.Upstream.PasswordFile, c.Upstream.PasswordCommand = "", []string{"/nonexistent/pass"}
		}, id: "secrets.source", status: StatusFail, contains: "/nonexistent/pass"},
		{name: "password command fails", cfg: func(c *Config) {
			c.Upstream.PasswordFile, c.Upstream.PasswordCommand = "", []string{"/bin/sh", "-c", "echo " + checkSecret + "; exit 3"}
		}, id: "secrets.source", status: StatusFail, contains: "exit status 3"},
		{name: "secret in argv", cfg: func(c *Config) {
			c.Upstream.PasswordFile, c.Upstream.PasswordCommand = "", []string{"/bin/echo", "--password=" + checkSecret}
		}, id: "secrets.config", status: StatusFail, contains: "--password=…"},
		{name: "credential outside the unit", cfg: func(c *Config) { c.Upstream.PasswordFile, c.Upstream.Credential = "", "upstream.password" },
			id: "secrets.source", status: StatusWarn, contains: "CREDENTIALS_DIRECTORY"},
		{name: "no username", cfg: func(c *Config) { c.Upstream.Username, c.Upstream.PasswordFile = "", "" },
			id: "secrets.source", status: StatusWarn, contains: "without AUTH"},
		{name: "config writable by others", setup: func(t *testing.T, f *checkFixture) {
			// load keeps the mode of an existing file.
			os.WriteFile(f.configFile, nil, 0o600)
			chmod(t, f.configFile, 0o666)
		},
			id: "files.config", status: StatusFail, contains: "chmod 640"},
		{name: "spool open to others", setup: func(t *testing.T, f *checkFixture) { chmod(t, f.spoolDir, 0o755) },
			id: "files.spool", status: StatusFail, contains: "chmod 700"},
		{name: "spool of another user", rootOnly: true, setup: func(t *testing.T, f *checkFixture) { chown(t, f.spoolDir, 65534) },
			id: "files.spool", status: StatusFail, contains: "chown -R"},
		{name: "spool missing", setup: func(t *testing.T, f *checkFixture) { os.Remove(f.spoolDir) },
			id: "files.spool", status: StatusWarn, contains: "install -d -m 700"},
		{name: "service user owns the files", rootOnly: true, setup: func(t *testing.T, f *checkFixture) {
			chown(t, f.spoolDir, 65534)
			f.sections += "[check]\nservice_user = \"65534\"\n"
		}, opts: func(o *CheckOptions) { o.Euid = intp(0) }, cfg: func(c *Config) { c.RunAsRoot = true },
			id: "files.spool", status: StatusPass, contains: "check.service_user"},
		{name: "unknown service user", setup: func(t *testing.T, f *checkFixture) {
			f.sections += "[check]\nservice_user = \"no-such-user-sealpost\"\n"
		},
			id: "identity.service_user", status: StatusFail, contains: "useradd"},
		{name: "dkim key readable by others", setup: func(t *testing.T, f *checkFixture) { chmod(t, f.keyFile, 0o644) },
			id: "dkim.key", status: StatusFail, contains: "chmod 600"},
		{name: "dkim key missing", setup: func(t *testing.T, f *checkFixture) { os.Remove(f.keyFile) },
			id: "dkim.key", status: StatusFail, contains: "keygen"},
		{name: "ed25519 only", setup: func(t *testing.T, f *checkFixture) {
			os.Remove(f.keyFile)
			k, err := certs.GenerateDKIMKey("ed25519", 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := certs.WriteDKIMKey(f.keyFile, k); err != nil {
				t.Fatal(err)
			}
		}, id: "dkim.algorithms", status: StatusWarn, contains: "Ed25519"},
		{name: "no dkim key", cfg: func(c *Config) { c.DKIM.Keys = nil }, id: "dkim.keys", status: StatusWarn, contains: "unsigned"},
		{name: "report mode", setup: func(t *testing.T, f *checkFixture) { f.sections += "mode = \"report\"\n" },
			id: "policy.mode", status: StatusWarn, contains: "enforce"},
		{name: "unlimited", setup: func(t *testing.T, f *checkFixture) {
			f.sections += "[limits]\nper_sender = { rate = \"0\", burst = 1 }\n"
		}, id: "policy.limits", status: StatusWarn, contains: "limits.per_sender"},
		{name: "open relay built in code", cfg: func(c *Config) { c.Listen.Addrs = append(c.Listen.Addrs, ListenAddr{Host: "0.0.0.0", Port: "25"}) },
			id: "policy.listen", status: StatusFail, contains: "open relay"},
		{name: "audit file writable", setup: func(t *testing.T, f *checkFixture) {
			os.WriteFile(filepath.Join(f.dir, "audit.log"), nil, 0o640)
			f.extra += "[log]\naudit_file = \"" + filepath.Join(f.dir, "audit.log") + "\"\n"
		}, id: "audit.file", status: StatusPass, contains: "writable"},
		{name: "audit file created by serve", setup: func(t *testing.T, f *checkFixture) {
			f.extra += "[log]\naudit_file = \"" + filepath.Join(f.dir, "audit.log") + "\"\n"
		}, id: "audit.file", status: StatusPass, contains: "does not exist yet"},
		{name: "audit file writable by others", setup: func(t *testing.T, f *checkFixture) {
			path := filepath.Join(f.dir, "audit.log")
			os.WriteFile(path, nil, 0o600)
			chmod(t, path, 0o666)
			f.extra += "[log]\naudit_file = \"" + path + "\"\n"
		}, id: "audit.file", status: StatusFail, contains: "chmod 640"},
		{name: "audit file directory missing", setup: func(t *testing.T, f *checkFixture) {
			f.extra += "[log]\naudit_file = \"" + filepath.Join(f.dir, "nodir", "audit.log") + "\"\n"
		}, id: "audit.file", status: StatusFail, contains: "install -d"},
		{name: "build info", opts: func(o *CheckOptions) {
			o.BuildInfo = &debug.BuildInfo{GoVersion: "go1.26.8", Deps: []*debug.Module{{Path: "github.com/emersion/go-smtp", Version: "v0.25.1"}}}
			o.Executable = "/usr/local/bin/sealpost"
		}, id: "build", status: StatusPass, contains: "govulncheck -mode=binary /usr/local/bin/sealpost"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.rootOnly && !asRoot {
				t.Skip("needs root to give files to another user")
			}
			f := newCheckFixture(t)
			if tt.setup != nil {
				tt.setup(t, f)
			}
			cfg := f.load(t)
			if tt.cfg != nil {
				tt.cfg(cfg)
			}
			var opts CheckOptions
			if tt.opts != nil {
				tt.opts(&opts)
			}
			r := runCheck(t, cfg, opts)
			want(t, r, tt.id, tt.status, tt.contains)
			if tt.id == "build" {
				want(t, r, "build", StatusPass, "go1.26.8")
				want(t, r, "build", StatusPass, "github.com/emersion/go-smtp v0.25.1")
			}
			if tt.status == StatusFail && r.OK {
				t.Error("OK = true with a FAIL finding")
			}
		})
	}
}

func TestCheckCAFile(t *testing.T) {
	t.Parallel()
	f := newCheckFixture(t)
	cfg := f.load(t)
	cfg.Upstream.CAFile = certstest.WriteCAFile(t, certstest.NewCA(t))
	r := runCheck(t, cfg, CheckOptions{})
	want(t, r, "tls.ca_file", StatusPass, "1 CA certificates parse")
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func chown(t *testing.T, path string, uid int) {
	t.Helper()
	if err := os.Chown(path, uid, -1); err != nil {
		t.Fatal(err)
	}
}

// TestCheckNamedUpstreams: each [upstreams.NAME] gets the TLS and secret
// checks [upstream] gets, with the upstream named in the finding.
func TestCheckNamedUpstreams(t *testing.T) {
	t.Parallel()
	f := newCheckFixture(t)
	cfg := f.load(t)
	billing := cfg.Upstream
	billing.PasswordFile = ""
	billing.PasswordEnv = "SEALPOST_CHECK_UNSET"
	cfg.Upstreams = map[string]UpstreamConfig{"billing": billing}
	r := runCheck(t, cfg, CheckOptions{})
	var named []Finding
	for _, fd := range findings(r, "secrets.source") {
		if strings.HasPrefix(fd.Subject, "upstreams.billing") {
			named = append(named, fd)
		}
	}
	if len(named) != 1 || named[0].Status != StatusFail || !strings.Contains(named[0].Found, "SEALPOST_CHECK_UNSET") {
		t.Errorf("billing secret findings = %+v, want one FAIL naming the unset variable", named)
	}
	found := false
	for _, fd := range findings(r, "tls.mode") {
		found = found || strings.HasPrefix(fd.Subject, "upstreams.billing")
	}
	if !found {
		t.Error("no tls.mode finding for upstreams.billing")
	}
}
