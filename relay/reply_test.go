package relay

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/emersion/go-smtp"

	"sealpost/certs/certstest"
	"sealpost/spool"
)

// TestDataReply pins the mapping from what went wrong to what the client
// sees: only the client's own faults are permanent, and nothing internal
// leaks into the text.
func TestDataReply(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err      error
		wantCode int
		wantEnh  smtp.EnhancedCode
	}{
		{nil, 0, smtp.EnhancedCode{}},
		{fmt.Errorf("spool: write body: %w", smtp.ErrDataTooLarge), 552, smtp.EnhancedCode{5, 3, 4}},
		{fmt.Errorf("spool: write body: %w", smtp.ErrTooLongLine), 554, smtp.EnhancedCode{5, 6, 0}},
		{fmt.Errorf("spool: write body: %w", &fs.PathError{Op: "write", Path: "/var/spool/sealpost/tmp/x", Err: syscall.ENOSPC}), 451, smtp.EnhancedCode{4, 3, 0}},
		{fmt.Errorf("spool: commit: %w", &fs.PathError{Op: "rename", Path: "/var/spool/sealpost/queue/x", Err: syscall.EACCES}), 451, smtp.EnhancedCode{4, 3, 0}},
		{fmt.Errorf("spool: write body: %w", os.ErrDeadlineExceeded), 421, smtp.EnhancedCode{4, 4, 2}},
		{errors.New("anything else"), 451, smtp.EnhancedCode{4, 3, 0}},
	} {
		got, _ := dataOutcome(tc.err)
		if tc.err == nil {
			if got != nil {
				t.Errorf("dataOutcome(nil) = %v", got)
			}
			continue
		}
		if got.Code != tc.wantCode || got.EnhancedCode != tc.wantEnh {
			t.Errorf("dataOutcome(%v) = %d %v, want %d %v", tc.err, got.Code, got.EnhancedCode, tc.wantCode, tc.wantEnh)
		}
		if strings.Contains(got.Message, "/var/spool") {
			t.Errorf("reply leaks a path: %q", got.Message)
		}
	}
}

// failingFS fails every file creation and every opening for writing, as a
// full or read-only disk would. (It used to fail only names with a tmp
// directory in their path: since a Put writes straight into body/, that
// held only because the test's own directory is under /tmp.)
type failingFS struct {
	spool.FS
	err error
}

func (f failingFS) Create(name string) (spool.File, error) {
	return nil, &fs.PathError{Op: "open", Path: name, Err: f.err}
}

func (f failingFS) OpenReady(name string) (spool.File, int64, error) {
	return nil, 0, &fs.PathError{Op: "open", Path: name, Err: f.err}
}

func TestSpoolFailureIsNever250(t *testing.T) {
	t.Parallel()
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EACCES, syscall.EIO} {
		t.Run(errno.Error(), func(t *testing.T) {
			t.Parallel()
			ca := certstest.NewCA(t)
			cfg := newTestConfig(t, ca, "127.0.0.1:1")
			logs := &syncBuffer{}
			r, err := New(cfg, Options{Logger: NewLogger(logs, cfg.Log), SpoolFS: failingFS{FS: spool.OSFS(), err: errno}})
			if err != nil {
				t.Fatal(err)
			}
			env := runRelay(t, r, cfg, logs)
			_, err = send(t, env.addr, "app@example.com", []string{"ops@example.net"}, testBody)
			var se *smtp.SMTPError
			if !errors.As(err, &se) || se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 0}) {
				t.Fatalf("submission with a failing spool: %v, want 451 4.3.0", err)
			}
			rec := logs.waitRecord(t, "rejected", 1)
			if rec[0]["rule"] != "spool" {
				t.Errorf("rejected record = %v", rec[0])
			}
			env.stop()
			assertQueueLen(t, cfg, 0)
		})
	}
}

func TestUnixSocketSubmission(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	up := tlsUpstream(t, ca)
	cfg := newTestConfig(t, ca, up.Addr())
	cfg.Listen.Socket = filepath.Join(t.TempDir(), "submit.sock")
	env := startRelay(t, cfg, nil)
	fi, err := os.Stat(cfg.Listen.Socket)
	if err != nil || fi.Mode().Perm() != 0o666 {
		t.Fatalf("socket mode: %v %v", fi, err)
	}
	conn, err := net.Dial("unix", cfg.Listen.Socket)
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClient(conn)
	defer c.Close()
	if err := c.SendMail("app@example.com", []string{"ops@example.net"}, strings.NewReader(testBody)); err != nil {
		t.Fatalf("submission over the unix socket: %v", err)
	}
	got := up.Expect(t, 1)[0]
	if !strings.Contains(string(got.Data), "Received: from localhost (local)") {
		t.Errorf("Received field for a socket submission:\n%s", got.Data)
	}
	env.stop()
	if _, err := os.Stat(cfg.Listen.Socket); !os.IsNotExist(err) {
		t.Errorf("socket left behind after shutdown: %v", err)
	}
}

func TestEHLOAdvertisesExtensions(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	env := startRelay(t, newTestConfig(t, ca, "127.0.0.1:1"), nil)
	c, err := smtp.Dial(env.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	for _, ext := range []string{"SIZE", "8BITMIME", "SMTPUTF8", "PIPELINING", "ENHANCEDSTATUSCODES"} {
		if ok, _ := c.Extension(ext); !ok {
			t.Errorf("EHLO does not advertise %s", ext)
		}
	}
	if _, param := c.Extension("SIZE"); param != fmt.Sprint(int64(cfg25MiB)) {
		t.Errorf("SIZE %q, want %d", param, cfg25MiB)
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("loopback listener advertises AUTH it does not support")
	}
}

const cfg25MiB = 25 << 20

// TestDataOutcomeRules: only sealpost's own trouble is counted as spool or
// dkim; what the client did is named as such.
func TestDataOutcomeRules(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		rule string
	}{
		{fmt.Errorf("spool: write body: %w", smtp.ErrDataTooLarge), "too-big"},
		{fmt.Errorf("spool: write body: %w", smtp.ErrTooLongLine), "line-too-long"},
		{fmt.Errorf("spool: write body: %w", os.ErrDeadlineExceeded), "timeout"},
		{fmt.Errorf("spool: write body: %w", io.ErrUnexpectedEOF), "client-gone"},
		{fmt.Errorf("spool: header: %w", fmt.Errorf("%w: boom", errSigning)), "dkim"},
		{&unsignedError{domain: "example.org"}, "dkim-no-key"},
		{fmt.Errorf("spool: write body: %w", syscall.ENOSPC), "spool"},
		{errors.New("anything else"), "spool"},
	} {
		if _, rule := dataOutcome(tc.err); rule != tc.rule {
			t.Errorf("dataOutcome(%v) rule = %q, want %q", tc.err, rule, tc.rule)
		}
	}
}
