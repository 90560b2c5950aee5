package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"sealpost/spool"
	"sealpost/upstream/upstreamtest"
)

// e2eSubmit sends one message with go-smtp's client and returns the final
// reply (or the error that ended the transaction).
func e2eSubmit(addr, from, to, body string) (string, error) {
	c, err := smtp.Dial(addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.CommandTimeout, c.SubmissionTimeout = 20*time.Second, 20*time.Second
	if err := c.Hello("client.test"); err != nil {
		return "", err
	}
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return "", err
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
	return "250 " + resp.StatusText, nil
}

func tokenBody(token string) string {
	return "From: app@example.com\r\nTo: ops@example.net\r\nSubject: " + token + "\r\n\r\nbody of " + token + "\r\nend-" + token + "\r\n"
}

var tokenRe = regexp.MustCompile(`Subject: (tok-[0-9a-z-]+)\r\n`)

// withControlSocket adds listen.control_socket to a config written by
// writeConfig.
func withControlSocket(t *testing.T, config, sock string) {
	t.Helper()
	src, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	src = bytes.Replace(src, []byte("socket = \"\"\n"), []byte(fmt.Sprintf("socket = \"\"\ncontrol_socket = %q\n", sock)), 1)
	if err := os.WriteFile(config, src, 0o644); err != nil {
		t.Fatal(err)
	}
}

func setRetry(t *testing.T, config, interval string) {
	t.Helper()
	src, _ := os.ReadFile(config)
	src = bytes.Replace(src, []byte(`retry_intervals = ["1s"]`), []byte(`retry_intervals = ["`+interval+`"]`), 1)
	os.WriteFile(config, src, 0o644)
}

func sealpost(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runBin(t, sealpostBin, nil, args...)
}

func runBin(t *testing.T, bin string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("%s %v: %v", bin, args, err)
	}
	return o.String(), e.String(), code
}

// TestQueueCommandsAgainstLiveDaemon: list, show, delete and flush while
// `sealpost serve` runs, then mailq and delete without a daemon.
func TestQueueCommandsAgainstLiveDaemon(t *testing.T) {
	t.Parallel()
	up, setup := newTLSUpstream(t, upstreamtest.Options{})
	proxy := upstreamtest.NewProxy(t) // the upstream is down for now
	listen := freePort(t)
	config := setup.writeConfig(t, listen, proxy.Addr(), "")
	sock := filepath.Join(setup.dir, "control.sock")
	withControlSocket(t, config, sock)
	setRetry(t, config, "1h")
	d := startServe(t, config, listen)

	var ids []string
	for _, tok := range []string{"tok-first", "tok-second", "tok-third"} {
		reply, err := e2eSubmit(listen, "app@example.com", "ops@example.net", tokenBody(tok))
		if err != nil || !strings.HasPrefix(reply, "250 ") {
			t.Fatalf("submit: %q, %v", reply, err)
		}
		ids = append(ids, strings.Fields(reply)[len(strings.Fields(reply))-1])
	}

	out, errOut, code := sealpost(t, "queue", "-config", config, "list")
	if code != 0 {
		t.Fatalf("queue list: exit %d: %s", code, errOut)
	}
	header := regexp.MustCompile(`(?m)^ID +AGE +SIZE +FROM +RECIPIENTS +ATTEMPTS +NEXT +LAST ERROR$`)
	if !header.MatchString(out) || !strings.Contains(out, "-- 3 message(s)") || !strings.Contains(out, "ops@example.net (pending)") {
		t.Errorf("queue list:\n%s", out)
	}
	for _, id := range ids {
		if !strings.Contains(out, id) {
			t.Errorf("queue list lacks %s:\n%s", id, out)
		}
	}

	out, _, code = sealpost(t, "queue", "list", "-json", "-config", config)
	var entries []struct {
		ID         string `json:"id"`
		From       string `json:"from"`
		Attempts   int    `json:"attempts"`
		Recipients []struct{ Addr, State string }
	}
	if err := json.Unmarshal([]byte(out), &entries); err != nil || code != 0 || len(entries) != 3 || entries[0].From != "app@example.com" || entries[0].Recipients[0].State != "pending" {
		t.Fatalf("queue list -json: %v, exit %d, %+v\n%s", err, code, entries, out)
	}

	out, _, code = sealpost(t, "queue", "-config", config, "show", ids[0])
	if code != 0 || !strings.Contains(out, "Subject: tok-first") || strings.Contains(out, "end-tok-first") || !strings.Contains(out, "ops@example.net") {
		t.Errorf("queue show (exit %d):\n%s", code, out)
	}
	out, _, _ = sealpost(t, "queue", "-config", config, "show", "-body", ids[0])
	if !strings.Contains(out, "end-tok-first") {
		t.Errorf("queue show -body lacks the body:\n%s", out)
	}
	if _, errOut, code := sealpost(t, "queue", "-config", config, "show", "20260101T000000-aaaaaaaaaa"); code != 1 || !strings.Contains(errOut, "no message") {
		t.Errorf("show of an unknown id: exit %d, %s", code, errOut)
	}

	out, errOut, code = sealpost(t, "queue", "-config", config, "delete", ids[1])
	if code != 0 || !strings.Contains(out, "deleted "+ids[1]) {
		t.Fatalf("queue delete: exit %d: %s %s", code, out, errOut)
	}
	if !waitFor(func() bool { return strings.Contains(d.stderr.String(), `"event":"deleted","queue_id":"`+ids[1]) }) {
		t.Errorf("no deleted audit record:\n%s", d.stderr)
	}

	proxy.Set(up.Addr())
	out, errOut, code = sealpost(t, "queue", "-config", config, "flush")
	if code != 0 {
		t.Fatalf("queue flush: exit %d: %s", code, errOut)
	}
	up.Expect(t, 2)
	if !waitFor(func() bool {
		o, _, _ := sealpost(t, "queue", "-config", config, "list")
		return strings.Contains(o, "Mail queue is empty")
	}) {
		t.Errorf("queue not empty after flush")
	}
	d.stop(t)
	for _, m := range up.Messages() {
		if bytes.Contains(m.Data, []byte("tok-second")) {
			t.Errorf("the deleted message was delivered")
		}
	}

	// No daemon: flush says so (75); mailq (a link) still lists; delete
	// acts on the spool itself.
	if _, errOut, code := sealpost(t, "queue", "-config", config, "flush"); code != 75 || !strings.Contains(errOut, "no sealpost daemon is running") {
		t.Errorf("flush without daemon: exit %d: %s", code, errOut)
	}
	proxy.Set("")
	d = startServe(t, config, listen)
	reply, err := e2eSubmit(listen, "app@example.com", "ops@example.net", tokenBody("tok-fourth"))
	if err != nil {
		t.Fatal(err)
	}
	id4 := strings.Fields(reply)[len(strings.Fields(reply))-1]
	d.stop(t)
	mailq := filepath.Join(t.TempDir(), "mailq")
	if err := os.Symlink(sealpostBin, mailq); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = runBin(t, mailq, []string{"SEALPOST_CONFIG=" + config})
	if code != 0 || !strings.Contains(out, id4) {
		t.Errorf("mailq: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = sealpost(t, "queue", "-config", config, "delete", id4)
	if code != 0 || !strings.Contains(errOut, `"event":"deleted"`) {
		t.Errorf("delete without daemon: exit %d\n%s%s", code, out, errOut)
	}
	if out, _, _ := sealpost(t, "queue", "-config", config, "list"); !strings.Contains(out, "Mail queue is empty") {
		t.Errorf("after delete:\n%s", out)
	}
}

func waitFor(cond func() bool) bool {
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// openDATA starts a transaction by hand and leaves it in the middle of the
// body.
func openDATA(t *testing.T, listen, token string) (net.Conn, *textproto.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", listen, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	tp := textproto.NewConn(c)
	expect := func(code int, cmd string) {
		if cmd != "" {
			tp.PrintfLine("%s", cmd)
		}
		if _, _, err := tp.ReadResponse(code); err != nil {
			t.Fatalf("%q: %v", cmd, err)
		}
	}
	expect(220, "")
	expect(250, "EHLO client.test")
	expect(250, "MAIL FROM:<app@example.com>")
	expect(250, "RCPT TO:<ops@example.net>")
	expect(354, "DATA")
	body := tokenBody(token)
	half := strings.Index(body, "\r\n\r\n") + 4
	io.WriteString(c, body[:half])
	return c, tp
}

// TestSIGTERMDuringDATA: a message being transferred when SIGTERM arrives
// is either finished and acknowledged — and then complete — or not
// acknowledged and not queued; never half a message.
func TestSIGTERMDuringDATA(t *testing.T) {
	t.Parallel()
	up, setup := newTLSUpstream(t, upstreamtest.Options{})
	listen := freePort(t)
	config := setup.writeConfig(t, listen, up.Addr(), "")
	d := startServe(t, config, listen)

	finisher, ftp := openDATA(t, listen, "tok-finished")
	quitter, _ := openDATA(t, listen, "tok-abandoned")
	d.cmd.Process.Signal(syscall.SIGTERM)
	if !waitFor(func() bool { return strings.Contains(d.stderr.String(), "sealpost relay stopping") }) {
		t.Fatal("no 'stopping' in the log after SIGTERM")
	}
	// The abandoned transfer ends without the final dot.
	quitter.Close()
	body := tokenBody("tok-finished")
	io.WriteString(finisher, body[strings.Index(body, "\r\n\r\n")+4:]+".\r\n")
	code, msg, err := ftp.ReadResponse(0)
	acked := err == nil && code == 250
	t.Logf("the transfer finished after SIGTERM got: %d %s %v", code, msg, err)
	ftp.PrintfLine("QUIT")
	finisher.Close()

	if err := d.waitExit(t); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, d.stderr)
	}

	var found []string
	for _, m := range up.Messages() {
		found = append(found, string(m.Data))
	}
	s, err := spool.Open(setup.spoolDir, spool.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	queued, _ := s.List()
	for _, m := range queued {
		b, _ := s.OpenBody(m.ID)
		data, _ := io.ReadAll(b)
		b.Close()
		found = append(found, string(data))
	}
	finished := 0
	for _, f := range found {
		if strings.Contains(f, "tok-abandoned") {
			t.Errorf("the abandoned transfer was queued or delivered:\n%s", f)
		}
		if strings.Contains(f, "tok-finished") {
			finished++
			if !strings.Contains(f, "end-tok-finished\r\n") {
				t.Errorf("half a message was kept:\n%s", f)
			}
		}
	}
	if acked && finished != 1 {
		t.Errorf("acknowledged after SIGTERM, but found %d times (delivered or queued)", finished)
	}
	if !acked && finished != 0 {
		t.Errorf("not acknowledged, yet kept %d times", finished)
	}
}

// TestSIGTERMDuringDelivery: SIGTERM while the upstream is still taking a
// message; the daemon waits for it within the grace period, exits 0, and
// the message is delivered (or, had the grace run out, still queued).
func TestSIGTERMDuringDelivery(t *testing.T) {
	t.Parallel()
	inDelivery := make(chan struct{}, 1)
	release := make(chan struct{})
	up, setup := newTLSUpstream(t, upstreamtest.Options{OnMessage: func(upstreamtest.Received) {
		select {
		case inDelivery <- struct{}{}:
		default:
		}
		<-release
	}})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	listen := freePort(t)
	d := startServe(t, setup.writeConfig(t, listen, up.Addr(), ""), listen)
	if reply, err := e2eSubmit(listen, "app@example.com", "ops@example.net", tokenBody("tok-inflight")); err != nil {
		t.Fatalf("%q %v", reply, err)
	}
	select {
	case <-inDelivery:
	case <-time.After(20 * time.Second):
		t.Fatal("delivery did not start")
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	if !waitFor(func() bool { return strings.Contains(d.stderr.String(), "sealpost relay stopping") }) {
		t.Fatal("no 'stopping' in the log after SIGTERM")
	}
	close(release) // the upstream answers 250 now
	if err := d.waitExit(t); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, d.stderr)
	}
	s, err := spool.Open(setup.spoolDir, spool.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	queued, _ := s.List()
	delivered := strings.Contains(d.stderr.String(), `"event":"delivered"`)
	if !delivered && len(queued) != 1 {
		t.Fatalf("message neither delivered nor queued: lost\n%s", d.stderr)
	}
	if delivered && len(queued) != 0 {
		t.Errorf("delivered and still queued")
	}
	t.Logf("delivered before exit: %v; still queued: %d", delivered, len(queued))
}

// TestKill9DuringSubmissionsAndDeliveries: 200 messages from 20 concurrent
// clients; the daemon is killed with SIGKILL after a random number of
// acknowledgements, while deliveries are in flight, and restarted. Every
// acknowledged message must reach the upstream; duplicates are bounded by
// the deliveries that can be in flight (upstream.max_connections).
func TestKill9DuringSubmissionsAndDeliveries(t *testing.T) {
	t.Parallel()
	up, setup := newTLSUpstream(t, upstreamtest.Options{})
	listen := freePort(t)
	// Rate limits out of the way: this is about durability, not policy.
	config := setup.writeConfig(t, listen, up.Addr(), `[limits]
per_sender = { rate = "100000/m", burst = 1000 }
per_client = { rate = "100000/m", burst = 1000 }
`)
	d := startServe(t, config, listen)

	const clients, perClient = 20, 10
	killAfter := int64(20 + rand.IntN(160))
	var acks atomic.Int64
	var mu sync.Mutex
	acked := map[string]bool{}
	killed := make(chan struct{})
	var killOnce sync.Once
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for i := range perClient {
				tok := fmt.Sprintf("tok-%02d-%02d", c, i)
				reply, err := e2eSubmit(listen, "app@example.com", "ops@example.net", tokenBody(tok))
				if err != nil || !strings.HasPrefix(reply, "250 ") {
					continue // not acknowledged: may or may not be delivered
				}
				mu.Lock()
				acked[tok] = true
				mu.Unlock()
				if acks.Add(1) == killAfter {
					killOnce.Do(func() { d.cmd.Process.Signal(syscall.SIGKILL); close(killed) })
				}
			}
		})
	}
	wg.Wait()
	killOnce.Do(func() { d.cmd.Process.Signal(syscall.SIGKILL); close(killed) })
	<-d.done
	d.done <- nil
	atKill := len(up.Messages())

	d2 := startServe(t, config, listen)
	mu.Lock()
	want := len(acked)
	mu.Unlock()
	seen := func() map[string]int {
		counts := map[string]int{}
		for _, m := range up.Messages() {
			if mm := tokenRe.FindSubmatch(m.Data); mm != nil {
				counts[string(mm[1])]++
			}
		}
		return counts
	}
	ok := waitFor(func() bool {
		c := seen()
		for tok := range acked {
			if c[tok] == 0 {
				return false
			}
		}
		return true
	})
	// Let the restarted daemon drain whatever else it holds, then stop it.
	waitFor(func() bool {
		s, err := spool.Open(setup.spoolDir, spool.Options{ReadOnly: true})
		if err != nil {
			return false
		}
		l, _ := s.List()
		return len(l) == 0
	})
	d2.stop(t)
	counts := seen()
	var missing []string
	dups, unackedDelivered := 0, 0
	for tok, n := range counts {
		if n > 1 {
			dups += n - 1
		}
		if !acked[tok] {
			unackedDelivered++
		}
	}
	for tok := range acked {
		if counts[tok] == 0 {
			missing = append(missing, tok)
		}
	}
	t.Logf("kill -9 after %d acks: %d/%d acknowledged, %d delivered before the kill, %d unique delivered in total, %d duplicates, %d delivered without a 250 (killed between fsync and reply)",
		killAfter, want, clients*perClient, atKill, len(counts), dups, unackedDelivered)
	if !ok || len(missing) > 0 {
		t.Fatalf("%d acknowledged messages lost: %v", len(missing), missing)
	}
	// upstream.max_connections (4) deliveries can be in flight at the kill:
	// each can have reached the upstream without its 250 being recorded.
	if dups > 4 {
		t.Errorf("%d duplicates, more than the 4 deliveries that can be in flight", dups)
	}
	if !strings.Contains(d2.stderr.String(), "sealpost relay started") {
		t.Errorf("the restarted daemon did not take over the spool:\n%s", d2.stderr)
	}
}

// TestSpoolFullGives451: with the spool on a tiny tmpfs, a message that
// does not fit gets 451 4.3.0 (never 250), leaves nothing behind, and the
// message acknowledged before it is intact.
func TestSpoolFullGives451(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tiny tmpfs needs root; the fault-injecting FS tests in spool and relay cover the same path")
	}
	t.Parallel()
	_, setup := newTLSUpstream(t, upstreamtest.Options{})
	if err := os.MkdirAll(setup.spoolDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", setup.spoolDir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s); the fault-injecting FS tests cover the same path", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() { exec.Command("umount", setup.spoolDir).Run() })
	listen := freePort(t)
	down := freePort(t) // keep mail queued
	d := startServe(t, setup.writeConfig(t, listen, down, ""), listen)

	reply, err := e2eSubmit(listen, "app@example.com", "ops@example.net", tokenBody("tok-small"))
	if err != nil || !strings.HasPrefix(reply, "250 ") {
		t.Fatalf("small message: %q %v", reply, err)
	}
	big := tokenBody("tok-big") + strings.Repeat(strings.Repeat("x", 76)+"\r\n", 6000) // ~460 KiB
	reply, err = e2eSubmit(listen, "app@example.com", "ops@example.net", big)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 0}) {
		t.Fatalf("message larger than the free space: reply %q, err %v; want 451 4.3.0", reply, err)
	}
	// Still serving: the small one fits again.
	if reply, err := e2eSubmit(listen, "app@example.com", "ops@example.net", tokenBody("tok-after")); err != nil || !strings.HasPrefix(reply, "250 ") {
		t.Errorf("after the failure: %q %v", reply, err)
	}
	d.stop(t)
	s, err := spool.Open(setup.spoolDir, spool.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	l, _ := s.List()
	var toks []string
	for _, m := range l {
		b, _ := s.OpenBody(m.ID)
		data, _ := io.ReadAll(b)
		b.Close()
		if mm := tokenRe.FindSubmatch(data); mm != nil {
			toks = append(toks, string(mm[1]))
		}
		if !bytes.Contains(data, []byte("end-tok-")) {
			t.Errorf("queued message %s is incomplete", m.ID)
		}
	}
	if strings.Join(toks, ",") != "tok-small,tok-after" && strings.Join(toks, ",") != "tok-after,tok-small" {
		t.Errorf("queued: %v, want tok-small and tok-after", toks)
	}
	for _, sub := range []string{"tmp", "body"} {
		entries, _ := os.ReadDir(filepath.Join(setup.spoolDir, sub))
		if sub == "tmp" && len(entries) != 0 {
			t.Errorf("leftovers in tmp/: %v", entries)
		}
		if sub == "body" && len(entries) != 2 {
			t.Errorf("body/ has %d files, want 2", len(entries))
		}
	}
	t.Logf("spool on a 256 KiB tmpfs: ~%d KiB message refused with 451, queue intact", len(big)>>10)
}
