package spool

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"
)

// flushRaceDeliverer answers every call with pause (the upstream is in
// backoff) until up is set; once block is set, the next call waits for
// release first, standing for an attempt that read the upstream's backoff
// before `queue flush` ended it and returns only after the flush.
type flushRaceDeliverer struct {
	mu      sync.Mutex
	calls   int
	up      bool
	block   bool
	pause   func() error
	started chan struct{}
	release chan struct{}
}

func (d *flushRaceDeliverer) Deliver(_ context.Context, _ ID, _ Envelope, to []string, _ io.Reader) ([]error, error) {
	d.mu.Lock()
	d.calls++
	up, block := d.up, d.block
	d.block = false
	d.mu.Unlock()
	if block {
		pause := d.pause() // the backoff as it stands before the flush
		close(d.started)
		<-d.release
		return nil, pause
	}
	if up {
		return make([]error, len(to)), nil
	}
	return nil, d.pause()
}

func (d *flushRaceDeliverer) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls
}

// TestFlushOutlivesPauseOfAttemptInFlight: `queue flush` makes the whole
// queue due and ends every pause. An attempt that learned of the
// upstream's backoff before the flush, and returns after it, must not
// impose that pause again: the flush promises the message in flight is
// retried as soon as its attempt ends, and the others at once. Without
// that, the stale pause (here an hour; with the default retry intervals up
// to the last one) held back every message until it ended, with nothing
// logged, until a second flush.
func TestFlushOutlivesPauseOfAttemptInFlight(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		pause func(until time.Time) error
	}{
		{"global", func(until time.Time) error { return pauseErr{until} }},
		{"keyed", func(until time.Time) error { return keyedPauseErr{until: until, key: "upstream:default"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			te := newTestEnv(t, Options{Workers: 1})
			start := te.clock.Now()
			d := &flushRaceDeliverer{
				// The pool's answer: backoff for an hour from now.
				pause:   func() error { return tc.pause(te.clock.Now().Add(time.Hour)) },
				started: make(chan struct{}),
				release: make(chan struct{}),
			}
			a := put(t, te.s, "one", "a@x")
			b := put(t, te.s, "two", "b@x")
			run(t, te.s, d)

			// The upstream is down: the queue waits for its backoff, an
			// hour. (A keyed pause calls once per message to learn its key.)
			deadline := time.Now().Add(waitLimit)
			for d.count() < 1 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			for range 20 {
				te.s.Kick()
				time.Sleep(time.Millisecond)
			}
			// The backoff is over: the next attempt finds the upstream's
			// state (a new hour of backoff) and is still running when the
			// operator brings the upstream back and flushes.
			d.mu.Lock()
			d.block = true
			d.mu.Unlock()
			te.clock.Set(start.Add(time.Hour))
			te.s.Kick()
			select {
			case <-d.started:
			case <-time.After(waitLimit):
				t.Fatalf("no attempt after the backoff ended (%d calls)", d.count())
			}
			d.mu.Lock()
			d.up = true
			d.mu.Unlock()
			te.s.Flush()
			close(d.release)

			// No clock advance: only the flush makes them due; a stall
			// would last the stale hour of fake time.
			te.ev.wait(t, EventDelivered, a)
			te.ev.wait(t, EventDelivered, b)
		})
	}
}
