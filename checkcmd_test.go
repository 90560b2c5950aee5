package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sealpost/certs"
	"sealpost/relay"
)

// checkHost writes a configuration whose offline checks all pass (as root,
// run_as_root = true makes identity.root a WARN) and returns its path and
// the spool directory.
func checkHost(t *testing.T) (config, spoolDir string) {
	t.Helper()
	dir := t.TempDir()
	pw := filepath.Join(dir, "upstream.password")
	if err := os.WriteFile(pw, []byte("app-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	spoolDir = filepath.Join(dir, "spool")
	if err := os.Mkdir(spoolDir, 0o700); err != nil {
		t.Fatal(err)
	}
	key, err := certs.GenerateDKIMKey("ed25519", 0)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "example.com.key")
	if err := certs.WriteDKIMKey(keyFile, key); err != nil {
		t.Fatal(err)
	}
	config = filepath.Join(dir, "relay.toml")
	src := `hostname = "app01.example.com"
run_as_root = true
[upstream]
addr = "smtp.example.com:587"
username = "relay@example.com"
password_file = "` + pw + `"
[spool]
dir = "` + spoolDir + `"
[[dkim.keys]]
domain = "example.com"
selector = "s2026"
key_file = "` + keyFile + `"
`
	if err := os.WriteFile(config, []byte(src), 0o640); err != nil {
		t.Fatal(err)
	}
	return config, spoolDir
}

// jsonReport mirrors the documented JSON shape (README, "Before go-live");
// decoding with DisallowUnknownFields makes any change to it fail here.
type jsonReport struct {
	Format int    `json:"format"`
	Config string `json:"config"`
	DNS    bool   `json:"dns"`
	Live   bool   `json:"live"`
	OK     bool   `json:"ok"`
	Counts struct {
		Pass int `json:"pass"`
		Warn int `json:"warn"`
		Fail int `json:"fail"`
	} `json:"counts"`
	Checks []struct {
		ID      string `json:"id"`
		Subject string `json:"subject"`
		Status  string `json:"status"`
		Found   string `json:"found"`
		Fix     string `json:"fix"`
	} `json:"checks"`
}

func decodeReport(t *testing.T, out []byte) jsonReport {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	var r jsonReport
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("JSON report does not have the documented shape: %v\n%s", err, out)
	}
	return r
}

func TestCheckCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     func(config string) []string
		breakIt  func(t *testing.T, config, spoolDir string)
		wantCode int
		wantOut  string
	}{
		{name: "good", wantCode: exitOK, wantOut: "FAIL (offline checks)"},
		{name: "spool open", breakIt: func(t *testing.T, _, spoolDir string) { os.Chmod(spoolDir, 0o755) },
			wantCode: exitFailure, wantOut: "FAIL  files.spool"},
		{name: "config does not load", breakIt: func(t *testing.T, config, _ string) {
			os.WriteFile(config, []byte("[upstream]\npassword = \"x\"\n"), 0o640)
		}, wantCode: exitFailure},
		{name: "bad flag", args: func(string) []string { return []string{"-nope"} }, wantCode: exitUsage},
		{name: "stray argument", args: func(c string) []string { return []string{"-config", c, "extra"} }, wantCode: exitUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			config, spoolDir := checkHost(t)
			if tt.breakIt != nil {
				tt.breakIt(t, config, spoolDir)
			}
			args := []string{"-config", config, "-offline"}
			if tt.args != nil {
				args = tt.args(config)
			}
			var stdout, stderr bytes.Buffer
			euid := os.Geteuid()
			code := runCheck(args, &stdout, &stderr, checkDeps{opts: relay.CheckOptions{Euid: &euid}})
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, &stdout, &stderr)
			}
			if !strings.Contains(stdout.String(), tt.wantOut) {
				t.Errorf("output lacks %q:\n%s", tt.wantOut, &stdout)
			}
			if strings.Contains(stdout.String()+stderr.String(), "app-password") {
				t.Error("the secret was printed")
			}
		})
	}
}

func TestCheckCommandJSON(t *testing.T) {
	t.Parallel()
	config, spoolDir := checkHost(t)
	euid := os.Geteuid()
	run := func() (int, jsonReport) {
		var stdout, stderr bytes.Buffer
		code := runCheck([]string{"-json", "-offline", "-config", config}, &stdout, &stderr, checkDeps{opts: relay.CheckOptions{Euid: &euid}})
		return code, decodeReport(t, stdout.Bytes())
	}
	code, r := run()
	if code != exitOK || !r.OK || r.Format != 1 || r.Config != config || r.DNS || r.Live || r.Counts.Fail != 0 {
		t.Fatalf("exit %d, report %+v", code, r)
	}
	if r.Counts.Pass+r.Counts.Warn != len(r.Checks) {
		t.Errorf("counts %+v do not add up to %d checks", r.Counts, len(r.Checks))
	}
	seen := map[string]bool{}
	for _, c := range r.Checks {
		seen[c.ID] = true
		if c.Status != "PASS" && c.Status != "WARN" && c.Status != "FAIL" {
			t.Errorf("check %s: status %q", c.ID, c.Status)
		}
		if c.Found == "" {
			t.Errorf("check %s says nothing", c.ID)
		}
	}
	for _, id := range []string{"identity.root", "tls.mode", "secrets.source", "files.spool", "dkim.key", "dkim.algorithms", "policy.mode", "audit.log", "build"} {
		if !seen[id] {
			t.Errorf("no %s check in JSON", id)
		}
	}

	os.Chmod(spoolDir, 0o750)
	code, r = run()
	if code != exitFailure || r.OK || r.Counts.Fail != 1 {
		t.Fatalf("with the spool open: exit %d, ok %v, counts %+v", code, r.OK, r.Counts)
	}
}

// TestCheckBinary runs the built binary once: exit codes and JSON as a
// script in a deployment pipeline sees them.
func TestCheckBinary(t *testing.T) {
	t.Parallel()
	config, spoolDir := checkHost(t)
	out, err := exec.Command(sealpostBin, "check", "-offline", "-json", "-config", config).Output()
	if err != nil {
		t.Fatalf("sealpost check: %v\n%s", err, out)
	}
	if r := decodeReport(t, out); !r.OK {
		t.Errorf("report not OK: %s", out)
	}

	os.Chmod(spoolDir, 0o755)
	out, err = exec.Command(sealpostBin, "check", "-offline", "-config", config).Output()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitFailure {
		t.Fatalf("with the spool open: err %v, want exit %d\n%s", err, exitFailure, out)
	}
	if !bytes.Contains(out, []byte("FAIL  files.spool")) || !bytes.Contains(out, []byte("chmod 700")) {
		t.Errorf("output does not name the failing check and its fix:\n%s", out)
	}
}
