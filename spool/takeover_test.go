package spool

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestTakeOverFromKilledProcess: a process holding the spool (with a
// message queued) is killed with SIGKILL; its flock dies with it, and the
// next Open takes the spool over and delivers the message.
func TestTakeOverFromKilledProcess(t *testing.T) {
	if dir := os.Getenv("SEALPOST_SPOOL_TAKEOVER_HELPER"); dir != "" {
		s, err := Open(dir, Options{})
		if err != nil {
			fmt.Println("open:", err)
			os.Exit(3)
		}
		id, err := s.Put(context.Background(), Envelope{From: "app@example.com", To: []string{"a@x"}}, strings.NewReader("body"))
		if err != nil {
			fmt.Println("put:", err)
			os.Exit(3)
		}
		fmt.Println("ready", id)
		time.Sleep(time.Minute) // bounded: the parent kills us long before
		os.Exit(4)
	}
	t.Parallel()
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestTakeOverFromKilledProcess$")
	cmd.Env = append(os.Environ(), "SEALPOST_SPOOL_TAKEOVER_HELPER="+dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	f := strings.Fields(line)
	if err != nil || len(f) != 2 || f[0] != "ready" {
		t.Fatalf("helper: %q, %v", line, err)
	}
	id := ID(f[1])
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("Open while the helper lives: %v, want ErrLocked", err)
	}
	cmd.Process.Signal(os.Kill)
	cmd.Wait()

	ev := newEvents()
	s, err := Open(dir, Options{Events: ev.record})
	if err != nil {
		t.Fatalf("Open after SIGKILL of the holder: %v", err)
	}
	defer s.Close()
	d := &deliverer{}
	run(t, s, d)
	ev.wait(t, EventDelivered, id)
	if calls := d.Calls(); len(calls) != 1 || calls[0].body != "body" {
		t.Errorf("deliveries %+v", calls)
	}
}

// TestAllRefusedKeepsPerRecipientFate: every RCPT refused (the deliverer
// reports the whole attempt as failed) yet one refusal is permanent: that
// recipient is finished, the other retried.
func TestAllRefusedKeepsPerRecipientFate(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	d := &deliverer{fn: func(to []string) ([]error, error) {
		per := make([]error, len(to))
		for i, a := range to {
			if a == "gone@x" {
				per[i] = permErr{"550 5.1.1 no such user"}
			} else {
				per[i] = tempErr{"450 4.2.1 mailbox busy"}
			}
		}
		return per, tempErr{"all recipients refused"}
	}}
	id := put(t, te.s, "body", "gone@x", "busy@x")
	run(t, te.s, d)
	failed := te.ev.wait(t, EventFailed, id)
	deferred := te.ev.wait(t, EventDeferred, id)
	if strings.Join(failed.Rcpts, ",") != "gone@x" || strings.Join(deferred.Rcpts, ",") != "busy@x" {
		t.Errorf("failed %v, deferred %v", failed.Rcpts, deferred.Rcpts)
	}
	m, err := te.s.Get(id)
	if err != nil || m.Pending()[0] != "busy@x" || len(m.Pending()) != 1 {
		t.Errorf("after the attempt: %+v %v", m, err)
	}
}
