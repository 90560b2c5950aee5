package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sealpost/certs/certstest"
	"sealpost/upstream/upstreamtest"
)

// End-to-end tests: the built binary, driven the way an admin would, with
// an in-process upstream. Everything stays on loopback.

var sealpostBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sealpost-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sealpostBin = filepath.Join(dir, "sealpost")
	build := exec.Command("go", "build", "-o", sealpostBin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build sealpost:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	e2eUser     = "relay@example.com"
	e2ePassword = "e2e-Upstream-pa55word"
)

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type e2eSetup struct {
	dir, caFile, pwFile, spoolDir string
}

func newSetup(t *testing.T, caPEM []byte) e2eSetup {
	t.Helper()
	dir := t.TempDir()
	s := e2eSetup{dir: dir, caFile: filepath.Join(dir, "ca.pem"), pwFile: filepath.Join(dir, "pw"), spoolDir: filepath.Join(dir, "spool")}
	if err := os.WriteFile(s.caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.pwFile, []byte(e2ePassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// writeConfig writes a configuration for a relay on listen that relays to
// upstreamAddr; extra is appended to the top level.
func (s e2eSetup) writeConfig(t *testing.T, listen, upstreamAddr, extra string) string {
	t.Helper()
	cfg := fmt.Sprintf(`hostname = "relay.e2e.test"
run_as_root = %v
%s
[listen]
addrs = [%q]
socket = ""

[upstream]
addr = %q
server_name = "127.0.0.1"
ca_file = %q
username = %q
password_file = %q

[spool]
dir = %q
retry_intervals = ["1s"]

[policy]
allowed_from_domains = ["example.com", "*.example.com"]

[log]
format = "json"
level = "debug"
`, os.Geteuid() == 0, extra, listen, upstreamAddr, s.caFile, e2eUser, s.pwFile, s.spoolDir)
	path := filepath.Join(s.dir, "relay.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// newTLSUpstream starts an upstream that requires STARTTLS (a certificate
// from a fresh CA) and AUTH as e2eUser, and a setup that trusts that CA.
func newTLSUpstream(t *testing.T, opts upstreamtest.Options) (*upstreamtest.Server, e2eSetup) {
	ca := certstest.NewCA(t)
	opts.TLS = upstreamtest.TLSStartTLS
	opts.Certificate = certstest.Leaf(t, ca, "127.0.0.1")
	opts.Users = map[string]string{e2eUser: e2ePassword}
	return upstreamtest.New(t, opts), newSetup(t, ca.CertPEM())
}

// daemon is a running `sealpost serve`.
type daemon struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan error
}

func startServe(t *testing.T, config, listen string) *daemon {
	t.Helper()
	d := spawnServe(t, config)
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", listen, time.Second)
		if err == nil {
			c.Close()
			return d
		}
		select {
		case err := <-d.done:
			t.Fatalf("sealpost serve exited: %v\n%s", err, d.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sealpost serve not listening on %s after 15s:\n%s", listen, d.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// spawnServe starts `sealpost serve` with config; the test's end kills it,
// after checking that no secret shows in its command line or log.
func spawnServe(t *testing.T, config string) *daemon {
	t.Helper()
	d := &daemon{stderr: &lockedBuffer{}, done: make(chan error, 1)}
	d.cmd = exec.Command(sealpostBin, "serve", "-config", config)
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		d.checkArgv(t)
		d.cmd.Process.Kill()
		err := <-d.done
		d.done <- err
		if strings.Contains(d.stderr.String(), e2ePassword) {
			t.Errorf("the upstream password appears in sealpost's log")
		}
	})
	return d
}

// checkArgv checks DESIGN.md's promise 2 for argv while the daemon runs,
// after the test's traffic (it has read its secrets by then): no
// credential in its command line.
func (d *daemon) checkArgv(t *testing.T) {
	t.Helper()
	select {
	case err := <-d.done:
		d.done <- err // exited: nothing left to look at
		return
	default:
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", d.cmd.Process.Pid))
	if err != nil {
		return // not Linux, or exited meanwhile
	}
	if bytes.Contains(cmdline, []byte(e2ePassword)) {
		t.Errorf("the upstream password appears in sealpost's command line")
	}
}

// stop sends SIGTERM and expects a clean exit.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	d.checkArgv(t)
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := d.waitExit(t); err != nil {
		t.Errorf("sealpost serve exited with %v after SIGTERM:\n%s", err, d.stderr)
	}
}

// waitExit waits (at most 40s, then fails the test) for the daemon to
// exit after a SIGTERM and returns how it exited; later calls see the
// same result.
func (d *daemon) waitExit(t *testing.T) error {
	t.Helper()
	select {
	case err := <-d.done:
		d.done <- err
		return err
	case <-time.After(40 * time.Second):
		t.Fatalf("sealpost serve did not exit within 40s of SIGTERM:\n%s", d.stderr)
		return nil
	}
}

func swaks(t *testing.T, listen string, args ...string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(listen)
	out, err := runSwaks(host, port, args...)
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	return out
}

func runSwaks(host, port string, args ...string) (string, error) {
	cmd := exec.Command("swaks", append([]string{"--server", host, "--port", port, "--timeout", "20"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func needSwaks(t *testing.T) {
	if _, err := exec.LookPath("swaks"); err != nil {
		t.Skip("swaks is not installed (apt-get install swaks); .ci/run installs it")
	}
}

var queuedAs = regexp.MustCompile(`250 2\.0\.0 OK: queued as (\S+)`)

// TestSwaksThroughServeToUpstream is the admin's first check: swaks →
// sealpost serve → a provider requiring STARTTLS and AUTH.
func TestSwaksThroughServeToUpstream(t *testing.T) {
	needSwaks(t)
	t.Parallel()
	up, setup := newTLSUpstream(t, upstreamtest.Options{})
	listen := freePort(t)
	d := startServe(t, setup.writeConfig(t, listen, up.Addr(), ""), listen)

	out := swaks(t, listen, "--from", "cron@app01.example.com", "--to", "ops@example.net",
		"--header", "Subject: nightly backup done", "--body", "backup of /srv finished: 41 GiB")
	m := queuedAs.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("swaks did not get 250 with a queue id:\n%s", out)
	}
	got := up.Expect(t, 1)[0]
	if got.From != "cron@app01.example.com" || len(got.To) != 1 || got.To[0] != "ops@example.net" {
		t.Errorf("envelope %q → %q", got.From, got.To)
	}
	if got.TLSVersion < tls.VersionTLS12 || got.AuthUser != e2eUser {
		t.Errorf("delivered over TLS %#x as %q", got.TLSVersion, got.AuthUser)
	}
	for _, want := range []string{"Subject: nightly backup done\r\n", "\r\n\r\nbackup of /srv finished: 41 GiB\r\n", "id " + m[1] + ";"} {
		if !bytes.Contains(got.Data, []byte(want)) {
			t.Errorf("delivered message lacks %q:\n%s", want, got.Data)
		}
	}
	d.stop(t)
	if n := len(up.Messages()); n != 1 {
		t.Errorf("upstream received %d messages, want exactly 1", n)
	}
	for _, event := range []string{`"event":"received"`, `"event":"delivered"`} {
		if !strings.Contains(d.stderr.String(), event) {
			t.Errorf("audit log lacks %s:\n%s", event, d.stderr)
		}
	}
}

// TestRestartDeliversQueuedMail: mail accepted while the provider is down
// survives a restart of sealpost and is delivered once it is back.
func TestRestartDeliversQueuedMail(t *testing.T) {
	needSwaks(t)
	t.Parallel()
	ca := certstest.NewCA(t)
	setup := newSetup(t, ca.CertPEM())
	listen := freePort(t)
	down := freePort(t) // nothing listens here
	d := startServe(t, setup.writeConfig(t, listen, down, ""), listen)
	for _, subject := range []string{"first", "second"} {
		swaks(t, listen, "--from", "app@example.com", "--to", "ops@example.net", "--header", "Subject: "+subject)
	}
	d.stop(t)

	up := upstreamtest.New(t, upstreamtest.Options{
		TLS:         upstreamtest.TLSStartTLS,
		Certificate: certstest.Leaf(t, ca, "127.0.0.1"),
		Users:       map[string]string{e2eUser: e2ePassword},
	})
	d = startServe(t, setup.writeConfig(t, listen, up.Addr(), ""), listen)
	msgs := up.Expect(t, 2)
	d.stop(t)
	// The log tells an operator when a restart has loaded the queue.
	if !regexp.MustCompile(`spool: queue loaded.*queued\W+2\b`).MatchString(d.stderr.String()) {
		t.Errorf("the restarted daemon did not log loading its 2 queued messages:\n%s", d.stderr)
	}
	subjects := map[string]int{}
	for _, m := range up.Messages() {
		for _, s := range []string{"first", "second"} {
			if bytes.Contains(m.Data, []byte("Subject: "+s+"\r\n")) {
				subjects[s]++
			}
		}
	}
	if len(msgs) != 2 || subjects["first"] != 1 || subjects["second"] != 1 {
		t.Errorf("after restart the upstream got %d messages: %v", len(up.Messages()), subjects)
	}
}

func TestServeRefusesRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not running as root")
	}
	t.Parallel()
	setup := newSetup(t, nil)
	cfg := setup.writeConfig(t, freePort(t), "127.0.0.1:1", "")
	src, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, bytes.Replace(src, []byte("run_as_root = true"), []byte("run_as_root = false"), 1), 0o644)
	out, err := exec.Command(sealpostBin, "serve", "-config", cfg).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitConfig {
		t.Fatalf("serve as root: err %v, want exit %d\n%s", err, exitConfig, out)
	}
	if !strings.Contains(string(out), "refusing to run as root") || !strings.Contains(string(out), "User=sealpost") {
		t.Errorf("message does not point to a dedicated user: %s", out)
	}
}

// TestServeStopsWhileStarting: a SIGTERM while serve is still starting
// (here waiting on a password_command, which may take up to its 30 s
// timeout) stops it at once and cleanly, not after the command: an admin's
// Ctrl-C or `systemctl stop` must not seem ignored. The command is killed
// with it, not left running on its own.
func TestServeStopsWhileStarting(t *testing.T) {
	t.Parallel()
	setup := newSetup(t, certstest.NewCA(t).CertPEM())
	started := filepath.Join(setup.dir, "started")
	// The command writes its pid, then waits up to a minute.
	script := fmt.Sprintf("echo $$ >%s.tmp; mv %s.tmp %s; i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; echo pw", started, started, started)
	cfg := setup.writeConfig(t, freePort(t), "127.0.0.1:1", "")
	src, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	command := fmt.Sprintf("password_command = [\"sh\", \"-c\", %q]", script)
	src = bytes.Replace(src, []byte(fmt.Sprintf("password_file = %q", setup.pwFile)), []byte(command), 1)
	if err := os.WriteFile(cfg, src, 0o644); err != nil {
		t.Fatal(err)
	}
	d := spawnServe(t, cfg)
	var pid int
	for i := 0; ; i++ {
		if b, err := os.ReadFile(started); err == nil {
			if pid, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
				t.Fatalf("the password command's pid: %v", err)
			}
			break
		}
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("serve exited before running the password command: %v\n%s", err, d.stderr)
		default:
		}
		if i == 500 {
			t.Fatalf("the password command did not start within 10s:\n%s", d.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		d.done <- err
		if err != nil {
			t.Errorf("serve exited with %v after SIGTERM while starting:\n%s", err, d.stderr)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("serve still running 15s after SIGTERM, waiting on its password command:\n%s", d.stderr)
	}
	if !strings.Contains(d.stderr.String(), "stopped by a signal before it began serving") {
		t.Errorf("the log does not say why it stopped:\n%s", d.stderr)
	}
	// Killed with the start, not left running without its parent.
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Errorf("the password command (pid %d) outlived serve: kill(0) = %v", pid, err)
	}
}

func TestServeBadConfigNamesFileAndLine(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "relay.toml")
	os.WriteFile(path, []byte("[upstream]\naddr = \"smtp.example.com:587\"\npassword = \"hunter2\"\n"), 0o600)
	out, err := exec.Command(sealpostBin, "serve", "-config", path).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitConfig {
		t.Fatalf("err %v, want exit %d\n%s", err, exitConfig, out)
	}
	want := path + ":3: upstream.password: a password in the configuration file is refused"
	if !strings.Contains(string(out), want) {
		t.Errorf("stderr = %q, want it to contain %q", out, want)
	}
	if strings.Contains(string(out), "hunter2") {
		t.Error("the refused password is echoed back")
	}
}

// TestDemo runs `sealpost demo` and follows the instructions it prints.
func TestDemo(t *testing.T) {
	needSwaks(t)
	t.Parallel()
	cmd := exec.Command(sealpostBin, "demo", "-listen", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	defer func() {
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
	}()
	next := func(match func(string) bool) string {
		timeout := time.After(20 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatal("demo exited early")
				}
				if match(l) {
					return l
				}
			case <-timeout:
				t.Fatal("demo did not print what was expected within 20s")
			}
		}
	}
	swaksLine := next(func(l string) bool { return strings.HasPrefix(strings.TrimSpace(l), "swaks ") })
	args := regexp.MustCompile(`"[^"]*"|\S+`).FindAllString(strings.TrimSpace(swaksLine), -1)
	for i := range args {
		args[i] = strings.Trim(args[i], `"`)
	}
	out, err := exec.Command(args[0], append(args[1:], "--timeout", "20")...).CombinedOutput()
	if err != nil || !queuedAs.Match(out) {
		t.Fatalf("the printed swaks command failed: %v\n%s", err, out)
	}
	sendmailLine := next(func(l string) bool { return strings.Contains(l, " sendmail -config ") })
	next(func(l string) bool { return strings.Contains(l, "upstream received a message") })
	tlsLine := next(func(l string) bool { return strings.Contains(l, "TLS: ") })
	if !strings.Contains(tlsLine, "TLS 1.") || !strings.Contains(tlsLine, "as demo@sealpost.test") {
		t.Errorf("demo output: %q", tlsLine)
	}
	next(func(l string) bool { return strings.Contains(l, "DKIM: pass") })

	// The printed sendmail command works as printed, too.
	if out, err := exec.Command("sh", "-c", strings.TrimSpace(sendmailLine)).CombinedOutput(); err != nil {
		t.Fatalf("the printed sendmail command failed: %v\n%s", err, out)
	}
	next(func(l string) bool { return strings.Contains(l, "upstream received a message") })
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
