package relay

import (
	"net"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"sealpost/certs/certstest"
)

// selfTCPComment is the Received comment for a loopback TCP client run by
// this test process: its own uid (Linux only; elsewhere nothing is known).
func selfTCPComment(t *testing.T) string {
	t.Helper()
	if runtime.GOOS != "linux" {
		return ""
	}
	s := " (uid " + strconv.Itoa(os.Getuid())
	if u, err := user.Current(); err == nil {
		s += " " + u.Username
	}
	return s + ")"
}

func TestPeerCommentIsSanitised(t *testing.T) {
	t.Parallel()
	p := peer{uid: 1000, user: "alice", pid: 42, program: "/tmp/x)\r\nBcc: victim@example.net (;"}
	got := p.comment()
	if strings.ContainsAny(got[1:len(got)-1], "()\r\n;") || !strings.HasPrefix(got, "(uid 1000 alice, /tmp/x_") {
		t.Errorf("comment = %q", got)
	}
	if c := unknownPeer.comment(); c != "" || unknownPeer.attrs() != nil || unknownPeer.localUser() != "" {
		t.Errorf("an unknown peer shows %q / %v / %q", c, unknownPeer.attrs(), unknownPeer.localUser())
	}
	if got := (peer{uid: 4321}).localUser(); got != "uid 4321" {
		t.Errorf("localUser without a passwd entry = %q", got)
	}
}

// TestPeerRecorded submits once over the unix socket and once over
// loopback TCP, from this process: both audit records and Received fields
// must name this process's user, and the socket one also its pid and
// program. The spool keeps the local user.
func TestPeerRecorded(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("peer credentials are read on Linux only")
	}
	t.Parallel()
	ca := certstest.NewCA(t)
	up := tlsUpstream(t, ca)
	cfg := newTestConfig(t, ca, up.Addr())
	cfg.Listen.Socket = filepath.Join(t.TempDir(), "submit.sock")
	env := startRelay(t, cfg, nil)
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}

	conn, err := net.Dial("unix", cfg.Listen.Socket)
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClient(conn)
	if err := c.SendMail("app@example.com", []string{"ops@example.net"}, strings.NewReader(testBody)); err != nil {
		t.Fatalf("socket submission: %v", err)
	}
	c.Close()
	if _, err := send(t, env.addr, "app@example.com", []string{"ops@example.net"}, testBody); err != nil {
		t.Fatalf("TCP submission: %v", err)
	}

	recs := env.logs.waitRecord(t, "received", 2)
	exe, _ := os.Executable()
	for _, r := range recs {
		if r["uid"] != float64(os.Getuid()) || r["local_user"] != me.Username {
			t.Errorf("received record lacks this user: %v", r)
		}
		switch r["client_ip"] {
		case "local":
			if r["pid"] != float64(os.Getpid()) || (r["program"] != exe && r["program"] != filepath.Base(exe)[:min(15, len(filepath.Base(exe)))]) {
				t.Errorf("socket record: pid %v program %v, want %d %s", r["pid"], r["program"], os.Getpid(), exe)
			}
		case "127.0.0.1":
			if _, ok := r["pid"]; ok {
				t.Errorf("TCP record claims a pid it cannot know: %v", r)
			}
		default:
			t.Errorf("unexpected record %v", r)
		}
	}
	msgs := up.Expect(t, 2)
	wantUser := "(uid " + strconv.Itoa(os.Getuid()) + " " + me.Username
	for _, m := range msgs {
		if !strings.Contains(string(m.Data), wantUser) {
			t.Errorf("Received field does not name the local user %q:\n%s", wantUser, m.Data)
		}
	}
}

// TestPerUserLimit: limits.per_user counts by local user, whatever
// envelope sender a program picks.
func TestPerUserLimit(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("peer credentials are read on Linux only")
	}
	t.Parallel()
	ca := certstest.NewCA(t)
	up := tlsUpstream(t, ca)
	cfg := newTestConfig(t, ca, up.Addr())
	cfg.Limits.PerSender = RateLimit{}
	cfg.Limits.PerUser = RateLimit{Rate: Rate{Events: 1, Per: time.Hour}, Burst: 2}
	env := startRelay(t, cfg, nil)
	for i, from := range []string{"a@example.com", "b@example.com", "c@example.com"} {
		_, err := send(t, env.addr, from, []string{"ops@example.net"}, testBody)
		if i < 2 && err != nil {
			t.Fatalf("message %d refused: %v", i+1, err)
		}
		if i == 2 {
			se, ok := err.(*smtp.SMTPError)
			if !ok || se.Code != 451 || !strings.Contains(se.Message, "local user") {
				t.Fatalf("third message from the same user: %v, want 451 for the local user", err)
			}
		}
	}
	rej := env.logs.waitRecord(t, "rejected", 1)
	if rej[0]["rule"] != "rate-per-user" || rej[0]["uid"] != float64(os.Getuid()) {
		t.Errorf("rejected record = %v", rej[0])
	}
}
