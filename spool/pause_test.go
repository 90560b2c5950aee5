package spool

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

type pauseDeliverer func(to []string) ([]error, error)

func (f pauseDeliverer) Deliver(_ context.Context, _ ID, _ Envelope, to []string, _ io.Reader) ([]error, error) {
	return f(to)
}

type pauseErr struct{ until time.Time }

func (e pauseErr) Error() string      { return "upstream in backoff" }
func (e pauseErr) RetryAt() time.Time { return e.until }
func (e pauseErr) Temporary() bool    { return true }

// TestPausedDelivererIsNotAnAttempt: while the deliverer says its upstream
// is paused, messages are neither counted nor retried before the pause
// ends, and none is handed out meanwhile.
func TestPausedDelivererIsNotAnAttempt(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{Workers: 1})
	var calls atomic.Int32
	until := te.clock.Now().Add(10 * time.Minute)
	var paused atomic.Bool
	paused.Store(true)
	d := pauseDeliverer(func(to []string) ([]error, error) {
		calls.Add(1)
		if paused.Load() {
			return nil, pauseErr{until}
		}
		return make([]error, len(to)), nil
	})
	ids := []ID{put(t, te.s, "one", "a@x"), put(t, te.s, "two", "b@x"), put(t, te.s, "three", "c@x")}
	run(t, te.s, d)

	// One call, then the pause holds the others back.
	deadline := time.Now().Add(waitLimit)
	for calls.Load() < 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	te.s.Kick()
	for range 20 {
		te.s.Kick()
		time.Sleep(time.Millisecond)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d deliveries during the pause, want 1", n)
	}
	m, err := te.s.Get(ids[0])
	if err != nil || m.Attempts != 0 {
		t.Fatalf("after a paused attempt: %+v, %v; want 0 attempts", m, err)
	}
	paused.Store(false)
	te.clock.Advance(10 * time.Minute)
	te.s.Kick()
	for _, id := range ids {
		te.ev.wait(t, EventDelivered, id)
	}
	for _, e := range te.ev.kinds() {
		if e == EventDeferred {
			t.Errorf("a paused attempt was recorded as deferred: %v", te.ev.kinds())
		}
	}
}

func TestCleanFailed(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	old, fresh := newID(te.clock.Now()), newID(te.clock.Now())
	for _, id := range []ID{old, fresh} {
		m := testMessage(id, Failed)
		writeFile(t, filepath.Join(te.dir, dirFailed, string(id)+extMeta), metaJSON(t, m))
		writeFile(t, filepath.Join(te.dir, dirFailed, string(id)+extBody), "body")
	}
	past := time.Now().Add(-8 * 24 * time.Hour)
	os.Chtimes(filepath.Join(te.dir, dirFailed, string(old)+extMeta), past, past)
	te.clock.Set(time.Now()) // CleanFailed compares with file times
	n, err := te.s.CleanFailed(7 * 24 * time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("CleanFailed = %d, %v; want 1", n, err)
	}
	if _, err := te.s.GetFailed(old); !errors.Is(err, ErrNotFound) {
		t.Errorf("old failed message still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(te.dir, dirFailed, string(old)+extBody)); !os.IsNotExist(err) {
		t.Errorf("old body still there")
	}
	if m, body, inFailed, err := te.s.Lookup(fresh); err != nil || !inFailed || m.ID != fresh {
		t.Errorf("Lookup(fresh) = %v, %v, %v", m, inFailed, err)
	} else {
		body.Close()
	}
	if l, _ := te.s.ListFailed(); len(l) != 1 {
		t.Errorf("ListFailed: %d", len(l))
	}
}
