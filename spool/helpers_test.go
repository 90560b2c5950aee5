package spool

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"sealpost/internal/fakeclock"
)

// waitLimit bounds how long a test waits for something asynchronous before
// it fails instead of hanging. It is never what makes a test pass.
const waitLimit = 20 * time.Second

func newFakeClock() *fakeclock.Clock {
	return fakeclock.New(time.Date(2026, 11, 27, 11, 15, 0, 0, time.UTC))
}

// events collects Events and lets a test wait for one.
type events struct {
	mu       sync.Mutex
	all      []Event
	consumed []bool
	notify   chan struct{} // a token per recorded event
	ch       chan Event    // every event, for tests that read the stream in order
}

func newEvents() *events {
	return &events{notify: make(chan struct{}, 1), ch: make(chan Event, 4096)}
}

func (e *events) record(ev Event) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.consumed = append(e.consumed, false)
	e.mu.Unlock()
	select {
	case e.notify <- struct{}{}:
	default:
	}
	e.ch <- ev
}

// has reports whether an event of kind for id was recorded.
func (e *events) has(kind string, id ID) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range e.all {
		if ev.Kind == kind && ev.ID == id {
			return true
		}
	}
	return false
}

func (e *events) kinds() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var k []string
	for _, ev := range e.all {
		k = append(k, ev.Kind)
	}
	return k
}

// wait returns the first event of kind (for id, if not empty) that no
// earlier wait returned, waiting for it if needed.
func (e *events) wait(t *testing.T, kind string, id ID) Event {
	t.Helper()
	timeout := time.After(waitLimit)
	for {
		e.mu.Lock()
		for i, ev := range e.all {
			if !e.consumed[i] && ev.Kind == kind && (id == "" || ev.ID == id) {
				e.consumed[i] = true
				e.mu.Unlock()
				return ev
			}
		}
		e.mu.Unlock()
		select {
		case <-e.notify:
		case <-timeout:
			t.Fatalf("no %q event for %q; saw %v", kind, id, e.kinds())
		}
	}
}

type testEnv struct {
	dir   string
	clock *fakeclock.Clock
	ev    *events
	s     *Spool
}

func newTestEnv(t *testing.T, opts Options) *testEnv {
	t.Helper()
	te := &testEnv{dir: t.TempDir(), clock: newFakeClock(), ev: newEvents()}
	te.s = te.open(t, opts)
	return te
}

// open opens te.dir with the test clock and event log (unless opts sets them).
func (te *testEnv) open(t *testing.T, opts Options) *Spool {
	t.Helper()
	if opts.Now == nil {
		opts.Now = te.clock.Now
	}
	if opts.Events == nil {
		opts.Events = te.ev.record
	}
	s, err := Open(te.dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func put(t *testing.T, s *Spool, body string, to ...string) ID {
	t.Helper()
	id, err := s.Put(context.Background(), Envelope{From: "app@example.com", To: to}, strings.NewReader(body))
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	return id
}

// run starts s.Run and returns a function that stops it and waits for it.
func run(t *testing.T, s *Spool, d Deliverer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, d) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(waitLimit):
				t.Errorf("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

type call struct {
	env  Envelope
	to   []string
	body string
}

// deliverer records calls and answers with fn (nil: accept everyone).
type deliverer struct {
	mu    sync.Mutex
	calls []call
	fn    func(to []string) ([]error, error)
}

func (d *deliverer) Deliver(ctx context.Context, _ ID, env Envelope, to []string, body io.Reader) ([]error, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.calls = append(d.calls, call{env: env, to: slices.Clone(to), body: string(b)})
	fn := d.fn
	d.mu.Unlock()
	if fn == nil {
		return make([]error, len(to)), nil
	}
	return fn(to)
}

func (d *deliverer) Calls() []call {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.calls)
}

type permErr struct{ msg string }

func (e permErr) Error() string   { return e.msg }
func (e permErr) Temporary() bool { return false }

type tempErr struct{ msg string }

func (e tempErr) Error() string   { return e.msg }
func (e tempErr) Temporary() bool { return true }

// files lists the file names in a subdirectory of the spool.
func files(t *testing.T, dir, sub string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, sub))
	if err != nil {
		t.Fatalf("ReadDir: %v", err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func readBody(t *testing.T, s *Spool, id ID) []byte {
	t.Helper()
	rc, err := s.OpenBody(id)
	if err != nil {
		t.Fatalf("OpenBody: %v", err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, rc); err != nil {
		t.Fatalf("read body: %v", err)
	}
	return buf.Bytes()
}

var errBoom = errors.New("boom")
