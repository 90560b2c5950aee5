package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// unitDirectives reads a systemd unit into section → key → values.
func unitDirectives(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: malformed line %q", path, line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

// TestServiceUnitHardening checks the directives the issue and README
// promise, so that a later edit cannot quietly drop one.
func TestServiceUnitHardening(t *testing.T) {
	t.Parallel()
	unit := unitDirectives(t, "sealpost.service")
	svc := unit["Service"]
	for key, want := range map[string]string{
		"User":                    "sealpost",
		"Group":                   "sealpost",
		"StateDirectory":          "sealpost",
		"StateDirectoryMode":      "0700",
		"RuntimeDirectory":        "sealpost",
		"LogsDirectory":           "sealpost",
		"LoadCredential":          "upstream.password:/etc/sealpost/upstream.password",
		"AmbientCapabilities":     "CAP_NET_BIND_SERVICE",
		"CapabilityBoundingSet":   "CAP_NET_BIND_SERVICE",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"MemoryDenyWriteExecute":  "yes",
		"RestrictNamespaces":      "yes",
		"RestrictSUIDSGID":        "yes",
		"LockPersonality":         "yes",
		"ProtectKernelTunables":   "yes",
		"ProtectKernelModules":    "yes",
		"ProtectControlGroups":    "yes",
		"SystemCallArchitectures": "native",
		"ExecReload":              "/bin/kill -HUP $MAINPID",
	} {
		if got := svc[key]; len(got) != 1 || got[0] != want {
			t.Errorf("[Service] %s = %q, want exactly %q", key, got, want)
		}
	}
	if got := svc["SystemCallFilter"]; len(got) == 0 || got[0] != "@system-service" {
		t.Errorf("SystemCallFilter = %q, want @system-service first", got)
	}
	if got := svc["ExecStart"]; len(got) != 1 || !strings.HasPrefix(got[0], "/usr/local/sbin/sealpost serve -config /etc/sealpost/relay.toml") {
		t.Errorf("ExecStart = %q", got)
	}
	for _, forbidden := range []string{"PermissionsStartOnly", "PrivilegedExecStart"} {
		if _, ok := svc[forbidden]; ok {
			t.Errorf("%s would run something with privileges", forbidden)
		}
	}
	// The shutdown grace of serve (30s) must fit before systemd's SIGKILL.
	stop := strings.TrimSuffix(strings.Join(svc["TimeoutStopSec"], ""), "s")
	if n, err := strconv.Atoi(stop); err != nil || n <= 30 {
		t.Errorf("TimeoutStopSec = %q, want more than serve's 30s grace", svc["TimeoutStopSec"])
	}
	if got := unit["Install"]["WantedBy"]; len(got) != 1 || got[0] != "multi-user.target" {
		t.Errorf("WantedBy = %q", got)
	}
}

// TestServiceUnitVerifies runs systemd-analyze on a copy of the unit whose
// ExecStart points at the binary the tests built (verify insists that the
// command exists), and checks the README states the exposure score it
// reports.
func TestServiceUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (apt-get install systemd); .ci/run installs it")
	}
	t.Parallel()
	src, err := os.ReadFile("sealpost.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(t.TempDir(), "sealpost.service")
	if err := os.WriteFile(unit, []byte(strings.ReplaceAll(string(src), "/usr/local/sbin/sealpost", sealpostBin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	out, err = exec.Command(analyze, "security", "--offline=yes", "--no-pager", unit).CombinedOutput()
	if err != nil {
		t.Skipf("systemd-analyze security --offline not supported here: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for sealpost\.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	if score > 2.0 {
		t.Errorf("exposure level %v, want at most 2.0 (README states it)\n%s", score, out)
	}
	readme, _ := os.ReadFile("README.md")
	if !strings.Contains(string(readme), "exposure level "+string(m[1])) {
		t.Errorf("README does not state the exposure level %s that systemd-analyze security reports", m[1])
	}
}
