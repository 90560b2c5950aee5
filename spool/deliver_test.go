package spool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestDelivered(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	d := &deliverer{}
	id, err := te.s.Put(context.Background(), Envelope{From: "app@example.com", To: []string{"a@example.org", "b@example.org"}, AuthUser: "cron"}, strings.NewReader("Subject: hi\r\n\r\nbody\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	run(t, te.s, d)
	ev := te.ev.wait(t, EventDelivered, id)
	if !slices.Equal(ev.Rcpts, []string{"a@example.org", "b@example.org"}) || ev.Attempts != 1 || ev.Envelope.AuthUser != "cron" || ev.Err != nil {
		t.Errorf("event = %+v", ev)
	}
	calls := d.Calls()
	if len(calls) != 1 {
		t.Fatalf("%d calls, want 1", len(calls))
	}
	if c := calls[0]; c.env.From != "app@example.com" || !slices.Equal(c.to, []string{"a@example.org", "b@example.org"}) || c.body != "Subject: hi\r\n\r\nbody\r\n" {
		t.Errorf("call = %+v", c)
	}
	waitGone(t, te.s, id)
	assertEmptySpool(t, te.dir)
	if f := files(t, te.dir, dirFailed); len(f) != 0 {
		t.Errorf("failed/ = %v", f)
	}
}

// waitGone waits until the message's files are removed; the event is
// emitted after the removal, but be explicit about what is checked.
func waitGone(t *testing.T, s *Spool, id ID) {
	t.Helper()
	if _, err := s.Get(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(%s) after delivery = %v, want ErrNotFound", id, err)
	}
}

func TestTemporaryFailureBackoff(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	d := &deliverer{fn: func([]string) ([]error, error) {
		return nil, errors.New("dial tcp: connection refused") // unknown: temporary
	}}
	id := put(t, te.s, "x", "a@example.org")
	created := te.clock.Now()
	run(t, te.s, d)
	// Default schedule; after the last entry, hourly.
	wantWaits := []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour, time.Hour, time.Hour}
	for n, wait := range wantWaits {
		attempt := n + 1
		ev := te.ev.wait(t, EventDeferred, id)
		if ev.Attempts != attempt || !slices.Equal(ev.Rcpts, []string{"a@example.org"}) || ev.Err == nil {
			t.Fatalf("attempt %d: event %+v", attempt, ev)
		}
		m, err := te.s.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		now := te.clock.Now()
		lo, hi := now.Add(wait-wait/10), now.Add(wait+wait/10)
		if m.Attempts != attempt || m.NextAttempt.Before(lo) || m.NextAttempt.After(hi) {
			t.Fatalf("attempt %d: Attempts %d NextAttempt %v, want %d in [%v, %v]", attempt, m.Attempts, m.NextAttempt, attempt, lo, hi)
		}
		if !ev.NextAttempt.Equal(m.NextAttempt) {
			t.Errorf("event NextAttempt %v, stored %v", ev.NextAttempt, m.NextAttempt)
		}
		if m.LastError != "dial tcp: connection refused" || m.Rcpts[0].State != Pending {
			t.Errorf("stored %+v", m)
		}
		if !m.Created.Equal(created) {
			t.Errorf("Created changed to %v", m.Created)
		}
		te.clock.Advance(m.NextAttempt.Sub(now))
		te.s.Kick()
	}
	te.ev.wait(t, EventDeferred, id)
	if got := len(d.Calls()); got != len(wantWaits)+1 {
		t.Errorf("%d attempts, want %d", got, len(wantWaits)+1)
	}
}

func TestBackoffSchedule(t *testing.T) {
	t.Parallel()
	s := &Spool{opts: Options{Backoff: []time.Duration{time.Minute, 10 * time.Minute}}}
	for _, tt := range []struct {
		n    int
		want time.Duration
	}{{0, time.Minute}, {1, time.Minute}, {2, 10 * time.Minute}, {3, 10 * time.Minute}, {100, 10 * time.Minute}} {
		for range 100 {
			got := s.backoff(tt.n)
			if got < tt.want-tt.want/10 || got > tt.want+tt.want/10 {
				t.Fatalf("backoff(%d) = %v, want %v ±10%%", tt.n, got, tt.want)
			}
		}
	}
}

// answer builds a Deliverer reply from a result per address.
func answer(res map[string]error) func([]string) ([]error, error) {
	return func(to []string) ([]error, error) {
		out := make([]error, len(to))
		for i, a := range to {
			out[i] = res[a]
		}
		return out, nil
	}
}

func whole(err error) func([]string) ([]error, error) {
	return func([]string) ([]error, error) { return nil, err }
}

func TestDeliveryOutcomes(t *testing.T) {
	t.Parallel()
	type step struct {
		reply  func([]string) ([]error, error)
		wantTo []string
	}
	tests := []struct {
		name       string
		rcpts      []string
		steps      []step
		wantEvents []string // kinds, in order, over all steps
		wantFailed bool     // ends in failed/ (else removed)
		wantStates []RcptState
	}{
		{
			name:       "permanent whole attempt",
			rcpts:      []string{"a@x", "b@x"},
			steps:      []step{{whole(permErr{"535 5.7.8 authentication failed"}), []string{"a@x", "b@x"}}},
			wantEvents: []string{EventFailed},
			wantFailed: true, wantStates: []RcptState{Failed, Failed},
		},
		{
			name:       "wrapped permanent error is still permanent",
			rcpts:      []string{"a@x"},
			steps:      []step{{whole(fmt.Errorf("upstream: %w", permErr{"554 no"})), []string{"a@x"}}},
			wantEvents: []string{EventFailed},
			wantFailed: true, wantStates: []RcptState{Failed},
		},
		{
			name:  "explicitly temporary then ok",
			rcpts: []string{"a@x"},
			steps: []step{
				{whole(tempErr{"421 busy"}), []string{"a@x"}},
				{nil, []string{"a@x"}},
			},
			wantEvents: []string{EventDeferred, EventDelivered},
			wantStates: []RcptState{Delivered},
		},
		{
			name:  "partial: retry only the temporarily refused",
			rcpts: []string{"a@x", "b@x", "c@x"},
			steps: []step{
				{answer(map[string]error{"b@x": tempErr{"450 mailbox busy"}, "c@x": permErr{"550 no such user"}}), []string{"a@x", "b@x", "c@x"}},
				{answer(map[string]error{"b@x": errors.New("451 later")}), []string{"b@x"}},
				{nil, []string{"b@x"}},
			},
			wantEvents: []string{EventDelivered, EventFailed, EventDeferred, EventDeferred, EventDelivered},
			wantFailed: true, wantStates: []RcptState{Delivered, Delivered, Failed},
		},
		{
			name:  "partial then all delivered",
			rcpts: []string{"a@x", "b@x"},
			steps: []step{
				{answer(map[string]error{"a@x": tempErr{"452 too many"}}), []string{"a@x", "b@x"}},
				{nil, []string{"a@x"}},
			},
			wantEvents: []string{EventDelivered, EventDeferred, EventDelivered},
			wantStates: []RcptState{Delivered, Delivered},
		},
		{
			name:  "deliverer returns too few results: temporary, nobody marked",
			rcpts: []string{"a@x", "b@x"},
			steps: []step{
				{func([]string) ([]error, error) { return []error{nil}, nil }, []string{"a@x", "b@x"}},
				{nil, []string{"a@x", "b@x"}},
			},
			wantEvents: []string{EventDeferred, EventDelivered},
			wantStates: []RcptState{Delivered, Delivered},
		},
		{
			name:  "deliverer panics: temporary",
			rcpts: []string{"a@x"},
			steps: []step{
				{func([]string) ([]error, error) { panic("bug") }, []string{"a@x"}},
				{nil, []string{"a@x"}},
			},
			wantEvents: []string{EventDeferred, EventDelivered},
			wantStates: []RcptState{Delivered},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			te := newTestEnv(t, Options{})
			var step atomic.Int32
			d := &deliverer{fn: func(to []string) ([]error, error) {
				st := tt.steps[step.Load()]
				if st.reply == nil {
					return make([]error, len(to)), nil
				}
				return st.reply(to)
			}}
			id := put(t, te.s, "body", tt.rcpts...)
			run(t, te.s, d)
			var got []string
			for i := range tt.steps {
				// Each step ends with a deferred event (more to do) or the
				// message leaving the queue.
				for {
					ev := <-te.ev.ch
					if ev.ID != id {
						continue
					}
					got = append(got, ev.Kind)
					if ev.Kind == EventDeferred || i == len(tt.steps)-1 && len(got) == len(tt.wantEvents) {
						break
					}
					if len(got) > len(tt.wantEvents) {
						t.Fatalf("events %v, want %v", got, tt.wantEvents)
					}
				}
				if i < len(tt.steps)-1 {
					m, err := te.s.Get(id)
					if err != nil {
						t.Fatal(err)
					}
					te.clock.Advance(m.NextAttempt.Sub(te.clock.Now()))
					step.Add(1)
					te.s.Kick()
				}
			}
			if !slices.Equal(got, tt.wantEvents) {
				t.Errorf("events %v, want %v", got, tt.wantEvents)
			}
			calls := d.Calls()
			if len(calls) != len(tt.steps) {
				t.Fatalf("%d calls, want %d", len(calls), len(tt.steps))
			}
			for i, c := range calls {
				if !slices.Equal(c.to, tt.steps[i].wantTo) {
					t.Errorf("attempt %d to %v, want %v", i+1, c.to, tt.steps[i].wantTo)
				}
			}
			if _, err := te.s.Get(id); !errors.Is(err, ErrNotFound) {
				t.Errorf("still queued: %v", err)
			}
			assertEmptySpool(t, te.dir)
			failed := files(t, te.dir, dirFailed)
			if !tt.wantFailed {
				if len(failed) != 0 {
					t.Errorf("failed/ = %v, want empty", failed)
				}
				return
			}
			if !slices.Equal(failed, []string{string(id) + extBody, string(id) + extMeta}) {
				t.Fatalf("failed/ = %v, want body and metadata", failed)
			}
			m := readFailed(t, te.dir, id)
			var states []RcptState
			for _, r := range m.Rcpts {
				states = append(states, r.State)
				if r.State == Failed && r.LastReply == "" {
					t.Errorf("failed rcpt %s has no LastReply", r.Addr)
				}
			}
			if !slices.Equal(states, tt.wantStates) {
				t.Errorf("states %v, want %v", states, tt.wantStates)
			}
			if m.Attempts != len(tt.steps) {
				t.Errorf("Attempts %d, want %d", m.Attempts, len(tt.steps))
			}
		})
	}
}

func readFailed(t *testing.T, dir string, id ID) *Message {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, dirFailed, string(id)+extMeta))
	if err != nil {
		t.Fatal(err)
	}
	m, err := decodeMessage(data, id)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestExpiry(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{MaxAge: time.Hour, Backoff: []time.Duration{40 * time.Minute}})
	d := &deliverer{fn: whole(tempErr{"421 try later"})}
	id := put(t, te.s, "body", "a@x")
	deadline := te.clock.Now().Add(time.Hour)
	run(t, te.s, d)

	te.ev.wait(t, EventDeferred, id)
	m, _ := te.s.Get(id)
	te.clock.Advance(m.NextAttempt.Sub(te.clock.Now()))
	te.s.Kick()

	// The second wait (40m ± 4m) would overshoot MaxAge: the last try is
	// scheduled exactly at the deadline, not skipped.
	ev := te.ev.wait(t, EventDeferred, id)
	if !ev.NextAttempt.Equal(deadline) {
		t.Fatalf("NextAttempt %v, want the deadline %v", ev.NextAttempt, deadline)
	}
	te.clock.Advance(deadline.Sub(te.clock.Now()))
	te.s.Kick()

	ev = te.ev.wait(t, EventExpired, id)
	if ev.Attempts != 3 || !slices.Equal(ev.Rcpts, []string{"a@x"}) || ev.Err == nil || !strings.Contains(ev.Err.Error(), "421 try later") {
		t.Errorf("expired event %+v", ev)
	}
	if got := len(d.Calls()); got != 3 {
		t.Errorf("%d attempts, want 3", got)
	}
	assertEmptySpool(t, te.dir)
	fm := readFailed(t, te.dir, id)
	if fm.Rcpts[0].State != Failed || !strings.Contains(fm.Rcpts[0].LastReply, "expired") {
		t.Errorf("failed metadata %+v", fm.Rcpts)
	}
}

func TestRestartDelivers(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	id1 := put(t, te.s, "first", "a@x")
	id2 := put(t, te.s, "second", "b@x", "c@x")
	if err := te.s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := te.open(t, Options{})
	d := &deliverer{}
	run(t, s2, d)
	te.ev.wait(t, EventDelivered, id1)
	te.ev.wait(t, EventDelivered, id2)
	bodies := map[string][]string{}
	for _, c := range d.Calls() {
		bodies[c.body] = c.to
	}
	if !slices.Equal(bodies["first"], []string{"a@x"}) || !slices.Equal(bodies["second"], []string{"b@x", "c@x"}) {
		t.Errorf("calls %+v", d.Calls())
	}
	assertEmptySpool(t, te.dir)
}

func TestRestartKeepsRecipientState(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	id := put(t, te.s, "x", "a@x", "b@x")
	d := &deliverer{fn: answer(map[string]error{"b@x": tempErr{"450"}})}
	stop := run(t, te.s, d)
	if ev := te.ev.wait(t, EventDelivered, id); !slices.Equal(ev.Rcpts, []string{"a@x"}) {
		t.Fatalf("first attempt delivered %v", ev.Rcpts)
	}
	te.ev.wait(t, EventDeferred, id)
	stop()
	te.s.Close()

	te.clock.Advance(2 * time.Hour)
	s2 := te.open(t, Options{})
	d2 := &deliverer{}
	run(t, s2, d2)
	te.ev.wait(t, EventDelivered, id)
	if calls := d2.Calls(); len(calls) != 1 || !slices.Equal(calls[0].to, []string{"b@x"}) {
		t.Errorf("after restart calls %+v, want only b@x", calls)
	}
}

// blockingDeliverer blocks each call until released, tracking concurrency.
type blockingDeliverer struct {
	started  chan string // body of each call as it starts
	release  chan struct{}
	inflight atomic.Int32
	maxSeen  atomic.Int32
	mu       sync.Mutex
	active   map[string]bool
	dup      atomic.Bool
}

func newBlockingDeliverer() *blockingDeliverer {
	return &blockingDeliverer{started: make(chan string, 100), release: make(chan struct{}), active: map[string]bool{}}
}

func (b *blockingDeliverer) Deliver(ctx context.Context, _ ID, env Envelope, to []string, body io.Reader) ([]error, error) {
	data, _ := io.ReadAll(body)
	key := string(data)
	b.mu.Lock()
	if b.active[key] {
		b.dup.Store(true)
	}
	b.active[key] = true
	b.mu.Unlock()
	n := b.inflight.Add(1)
	for {
		m := b.maxSeen.Load()
		if n <= m || b.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	b.started <- key
	<-b.release
	b.inflight.Add(-1)
	b.mu.Lock()
	delete(b.active, key)
	b.mu.Unlock()
	return make([]error, len(to)), nil
}

func TestWorkersBounded(t *testing.T) {
	t.Parallel()
	const workers, msgs = 2, 7
	te := newTestEnv(t, Options{Workers: workers})
	b := newBlockingDeliverer()
	for i := range msgs {
		put(t, te.s, fmt.Sprint("msg", i), "a@x")
	}
	run(t, te.s, b)
	for range workers {
		<-b.started
	}
	if n := b.inflight.Load(); n != workers {
		t.Errorf("%d in flight with %d workers busy", n, workers)
	}
	for range msgs - workers {
		b.release <- struct{}{}
		<-b.started
	}
	for range workers {
		b.release <- struct{}{}
	}
	for range msgs {
		te.ev.wait(t, EventDelivered, "")
	}
	if m := b.maxSeen.Load(); m > workers {
		t.Errorf("%d deliveries at once, want at most %d", m, workers)
	}
	if b.dup.Load() {
		t.Errorf("a message was with two workers at once")
	}
	assertEmptySpool(t, te.dir)
}

func TestRunStopWaitsForInFlight(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	id := put(t, te.s, "x", "a@x")
	started := make(chan struct{})
	var finished atomic.Bool
	d := deliverFunc(func(ctx context.Context) ([]error, error) {
		close(started)
		<-ctx.Done()
		finished.Store(true)
		return nil, fmt.Errorf("upstream: %w", ctx.Err())
	})
	stop := run(t, te.s, d)
	<-started
	stop()
	if !finished.Load() {
		t.Fatal("Run returned before the in-flight delivery finished")
	}
	te.ev.wait(t, EventDeferred, id)
	// Shutdown is not the upstream's fault: not counted, still due now.
	m, err := te.s.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if m.Attempts != 0 || !m.NextAttempt.Equal(te.clock.Now()) {
		t.Errorf("after interrupted attempt: Attempts %d NextAttempt %v, want 0 and now", m.Attempts, m.NextAttempt)
	}

	// Delivered by the next Run (same process: the heap still has it).
	run(t, te.s, &deliverer{})
	te.ev.wait(t, EventDelivered, id)
}

type deliverFunc func(ctx context.Context) ([]error, error)

func (f deliverFunc) Deliver(ctx context.Context, _ ID, _ Envelope, _ []string, _ io.Reader) ([]error, error) {
	return f(ctx)
}

func TestCloseStopsRun(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	done := make(chan error, 1)
	go func() { done <- te.s.Run(context.Background(), &deliverer{}) }()
	id := put(t, te.s, "x", "a@x")
	te.ev.wait(t, EventDelivered, id)
	if err := te.s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Run did not return after Close")
	}
	if err := te.s.Run(context.Background(), &deliverer{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close = %v, want ErrClosed", err)
	}
}

func TestRunTwice(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	b := newBlockingDeliverer()
	put(t, te.s, "x", "a@x")
	run(t, te.s, b)
	<-b.started // the first Run is certainly running now
	if err := te.s.Run(context.Background(), &deliverer{}); err == nil {
		t.Error("second concurrent Run succeeded")
	}
	close(b.release)
}

func TestDeleteWhileDelivering(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	id := put(t, te.s, "x", "a@x")
	release := make(chan struct{})
	started := make(chan struct{})
	d := deliverFunc(func(ctx context.Context) ([]error, error) {
		close(started)
		<-release
		return nil, tempErr{"421"}
	})
	run(t, te.s, d)
	<-started
	if err := te.s.Delete(id); err != nil {
		t.Fatalf("Delete in flight: %v", err)
	}
	close(release)
	te.ev.wait(t, EventDeleted, id)
	if _, err := te.s.Get(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get = %v, want ErrNotFound", err)
	}
	assertEmptySpool(t, te.dir)
}

func TestFlush(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	var fail atomic.Bool
	fail.Store(true)
	d := &deliverer{fn: func(to []string) ([]error, error) {
		if fail.Load() {
			return nil, tempErr{"421"}
		}
		return make([]error, len(to)), nil
	}}
	id := put(t, te.s, "x", "a@x")
	run(t, te.s, d)
	te.ev.wait(t, EventDeferred, id)
	fail.Store(false)
	te.s.Flush() // no clock advance: only Flush makes it due
	ev := te.ev.wait(t, EventDelivered, id)
	if ev.Attempts != 2 {
		t.Errorf("Attempts %d, want 2", ev.Attempts)
	}
}

func TestIsPermanent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("anything"), false},
		{context.DeadlineExceeded, false},
		{tempErr{"421"}, false},
		{permErr{"550"}, true},
		{fmt.Errorf("wrapped: %w", permErr{"550"}), true},
		{errors.Join(errors.New("x"), permErr{"550"}), true},
	}
	for _, tt := range tests {
		if got := IsPermanent(tt.err); got != tt.want {
			t.Errorf("IsPermanent(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
