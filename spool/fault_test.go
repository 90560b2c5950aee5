package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// faultFS wraps the OS and fails the first operation op on a path that
// contains match, once.
type faultFS struct {
	FS
	op, match string

	mu    sync.Mutex
	fired bool
}

var errInjected = errors.New("injected fault")

func (f *faultFS) fail(op, path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fired || op != f.op || !strings.Contains(path, f.match) {
		return nil
	}
	f.fired = true
	return fmt.Errorf("%s %s: %w", op, path, errInjected)
}

func (f *faultFS) Fired() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fired
}

func (f *faultFS) Create(name string) (File, error) {
	if err := f.fail("create", name); err != nil {
		return nil, err
	}
	file, err := f.FS.Create(name)
	if err != nil {
		return nil, err
	}
	return &faultFile{File: file, fs: f, name: name}, nil
}

func (f *faultFS) Rename(o, n string) error {
	if err := f.fail("rename", n); err != nil {
		return err
	}
	return f.FS.Rename(o, n)
}

func (f *faultFS) SyncDir(name string) error {
	if err := f.fail("syncdir", name); err != nil {
		return err
	}
	return f.FS.SyncDir(name)
}

func (f *faultFS) Remove(name string) error {
	if err := f.fail("remove", name); err != nil {
		return err
	}
	return f.FS.Remove(name)
}

type faultFile struct {
	File
	fs    *faultFS
	name  string
	wrote bool
}

func (f *faultFile) Write(p []byte) (int, error) {
	op := "write"
	if bytes.Contains(p, []byte(trailerMagic)) {
		op = "write trailer"
	}
	// Write half, then fail: a short write like a full disk gives.
	if err := f.fs.fail(op, f.name); err != nil {
		n, _ := f.File.Write(p[:len(p)/2])
		return n, err
	}
	return f.File.Write(p)
}

func (f *faultFile) Sync() error {
	if err := f.fs.fail("sync", f.name); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *faultFile) Close() error {
	if err := f.fs.fail("close", f.name); err != nil {
		f.File.Close()
		return err
	}
	return f.File.Close()
}

func sep(s string) string { return string(filepath.Separator) + s + string(filepath.Separator) }

// TestPutFaults fails each step of Put in turn: Put must return an error,
// commit nothing, leave nothing that a later Open would deliver, and the
// spool must keep working.
func TestPutFaults(t *testing.T) {
	t.Parallel()
	tests := []struct{ op, match string }{
		{"create", sep(dirBody)},                   // body file
		{"write", extBody},                         // body data (disk full)
		{"write trailer", extBody},                 // the metadata after it (the commit marker)
		{"sync", extBody},                          // fsync of both
		{"close", extBody},                         // close (NFS write-back)
		{"syncdir", sep(dirBody)[:len(dirBody)+1]}, // body directory fsync
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.op, " ", "_")+strings.ReplaceAll(tt.match, string(filepath.Separator), "_"), func(t *testing.T) {
			t.Parallel()
			ffs := &faultFS{FS: OSFS(), op: tt.op, match: tt.match}
			te := newTestEnv(t, Options{FS: ffs})
			body := strings.Repeat("0123456789abcdef", 8<<10) // several Writes
			id, err := te.s.Put(context.Background(), Envelope{To: []string{"a@x"}}, strings.NewReader(body))
			if !ffs.Fired() {
				t.Fatalf("fault %s %q never fired (Put = %q, %v)", tt.op, tt.match, id, err)
			}
			if !errors.Is(err, errInjected) {
				t.Fatalf("Put = %q, %v; want the injected error", id, err)
			}
			if !strings.HasPrefix(err.Error(), "spool: ") {
				t.Errorf("error %q lacks context", err)
			}
			if list, err := te.s.List(); err != nil || len(list) != 0 {
				t.Errorf("List after failed Put = %v, %v", list, err)
			}
			assertEmptySpool(t, te.dir)

			// The fault was transient: the spool still works.
			good := put(t, te.s, "good", "b@x")
			te.s.Close()

			// After a restart nothing but the good message exists to deliver.
			s := te.open(t, Options{})
			list, err := s.List()
			if err != nil || len(list) != 1 || list[0].ID != good {
				t.Fatalf("after reopen: %v, %v; want only %s", list, err, good)
			}
			d := &deliverer{}
			run(t, s, d)
			te.ev.wait(t, EventDelivered, good)
			if calls := d.Calls(); len(calls) != 1 || calls[0].body != "good" {
				t.Errorf("delivered %+v", calls)
			}
		})
	}
}

// A failure to record an attempt's result keeps the message queued: it is
// tried again (at least once), never lost.
func TestAttemptRecordFault(t *testing.T) {
	t.Parallel()
	ffs := &faultFS{FS: OSFS(), op: "never"}
	te := newTestEnv(t, Options{FS: ffs})
	id := put(t, te.s, "x", "a@x")
	ffs.mu.Lock()
	ffs.op, ffs.match = "rename", sep(dirQueue)
	ffs.mu.Unlock()
	calls := 0
	d := &deliverer{fn: func(to []string) ([]error, error) {
		calls++
		if calls == 1 {
			return nil, tempErr{"421"}
		}
		return make([]error, len(to)), nil
	}}
	run(t, te.s, d)
	ev := te.ev.wait(t, EventError, id)
	if !errors.Is(ev.Err, errInjected) {
		t.Errorf("error event %v", ev.Err)
	}
	te.ev.wait(t, EventDeferred, id)
	m, err := te.s.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if m.Attempts != 0 {
		t.Errorf("on disk Attempts %d, want the old 0", m.Attempts)
	}
	te.s.Flush()
	te.ev.wait(t, EventDelivered, id)
	assertEmptySpool(t, te.dir)
}

// TestFailedMoveInterrupted: a move to failed/ that stops after writing
// the final metadata (the body's rename fails) is finished on the next
// try from that metadata, not from the trailer, which still says every
// recipient is pending: the refused recipient is not tried again.
func TestFailedMoveInterrupted(t *testing.T) {
	t.Parallel()
	ffs := &faultFS{FS: OSFS(), op: "rename", match: sep(dirFailed)}
	te := newTestEnv(t, Options{FS: ffs})
	id := put(t, te.s, "Subject: x\r\n\r\nrefused\r\n", "a@x")
	d := &deliverer{fn: func(to []string) ([]error, error) {
		return []error{permErr{"550 no such user"}}, nil
	}}
	run(t, te.s, d)
	ev := te.ev.wait(t, EventError, id)
	if !errors.Is(ev.Err, errInjected) {
		t.Fatalf("error event %v, want the injected rename failure", ev.Err)
	}
	te.s.Flush()
	deadline := time.Now().Add(waitLimit)
	m, err := te.s.GetFailed(id)
	for err != nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		m, err = te.s.GetFailed(id)
	}
	if err != nil || m.Rcpts[0].State != Failed {
		t.Fatalf("failed/ holds %+v, %v; want the message with its recipient failed", m, err)
	}
	waitGone(t, te.s, id)
	if n := len(d.Calls()); n != 1 {
		t.Errorf("%d delivery attempts, want 1: the refused recipient was tried again", n)
	}
}
