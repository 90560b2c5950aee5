package spool

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

type keyedPauseErr struct {
	until time.Time
	key   string
}

func (e keyedPauseErr) Error() string      { return "upstream " + e.key + " paced" }
func (e keyedPauseErr) RetryAt() time.Time { return e.until }
func (e keyedPauseErr) Temporary() bool    { return true }
func (e keyedPauseErr) PauseKey() string   { return e.key }

// keyedDeliverer pauses the mail of senders in paused (by key = sender)
// and delivers the rest, counting calls per sender.
type keyedDeliverer struct {
	mu     sync.Mutex
	until  time.Time
	paused map[string]bool
	calls  map[string]int
}

func (d *keyedDeliverer) Deliver(_ context.Context, _ ID, env Envelope, to []string, _ io.Reader) ([]error, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls[env.From]++
	if d.paused[env.From] {
		return nil, keyedPauseErr{until: d.until, key: env.From}
	}
	return make([]error, len(to)), nil
}

func (d *keyedDeliverer) count(from string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls[from]
}

// TestKeyedPauseHoldsBackOnlyItsKey: a pause with a key (one upstream
// among several) holds back the messages that returned it, not the
// others; those wait in memory without further calls until the pause ends,
// and the pause is not an attempt.
func TestKeyedPauseHoldsBackOnlyItsKey(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{Workers: 2})
	d := &keyedDeliverer{until: te.clock.Now().Add(10 * time.Minute), paused: map[string]bool{"slow@x": true}, calls: map[string]int{}}
	var slow, fast []ID
	for range 5 {
		slow = append(slow, putFrom(t, te.s, "slow@x", "a@y"))
		fast = append(fast, putFrom(t, te.s, "fast@x", "b@y"))
	}
	run(t, te.s, d)
	for _, id := range fast {
		te.ev.wait(t, EventDelivered, id)
	}
	// Each slow message was tried at most once (to learn its key), then
	// held back; kicks do not hand them out again.
	for range 20 {
		te.s.Kick()
		time.Sleep(time.Millisecond)
	}
	if n := d.count("slow@x"); n < 1 || n > len(slow) {
		t.Fatalf("%d calls for the paused key, want between 1 and %d", n, len(slow))
	}
	before := d.count("slow@x")
	for range 20 {
		te.s.Kick()
		time.Sleep(time.Millisecond)
	}
	if n := d.count("slow@x"); n != before {
		t.Fatalf("calls for the paused key went from %d to %d during the pause", before, n)
	}
	for _, id := range slow {
		if m, err := te.s.Get(id); err != nil || m.Attempts != 0 {
			t.Fatalf("paused message %s: %+v, %v; want 0 attempts", id, m, err)
		}
	}
	d.mu.Lock()
	d.paused = nil
	d.mu.Unlock()
	te.clock.Advance(10 * time.Minute)
	te.s.Kick()
	for _, id := range slow {
		te.ev.wait(t, EventDelivered, id)
	}
}

func putFrom(t *testing.T, s *Spool, from string, to ...string) ID {
	t.Helper()
	id, err := s.Put(context.Background(), Envelope{From: from, To: to}, strings.NewReader("Subject: x\r\n\r\nbody\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	return id
}
