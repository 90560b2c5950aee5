package policy

import (
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"sealpost/internal/fakeclock"
)

func newFakeClock() *fakeclock.Clock {
	return fakeclock.New(time.Date(2025, 11, 27, 11, 0, 0, 0, time.UTC))
}

func TestLimiterRefill(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	// 60/m with a burst of 3: one token a second.
	l := NewLimiter(LimiterConfig{Rate: 1, Burst: 3}, clock)
	for i := range 3 {
		if ok, _ := l.Allow("cron@example.com"); !ok {
			t.Fatalf("event %d of the burst refused", i)
		}
	}
	ok, retry := l.Allow("cron@example.com")
	if ok || retry != time.Second {
		t.Fatalf("after the burst: %v, retry %v; want refused, 1s", ok, retry)
	}
	// Refusals do not consume: the wait only shrinks as time passes.
	clock.Advance(400 * time.Millisecond)
	if ok, retry := l.Allow("cron@example.com"); ok || retry != 600*time.Millisecond {
		t.Fatalf("0.4s later: %v, retry %v; want refused, 600ms", ok, retry)
	}
	// Another key has its own bucket.
	if ok, _ := l.Allow("other@example.com"); !ok {
		t.Fatal("another key was refused")
	}
	clock.Advance(600 * time.Millisecond)
	if ok, retry := l.Allow("cron@example.com"); !ok || retry != 0 {
		t.Fatalf("after refill: %v, %v", ok, retry)
	}
	if ok, _ := l.Allow("cron@example.com"); ok {
		t.Fatal("one token refilled, two spent")
	}
	// Refill never exceeds the burst.
	clock.Advance(time.Hour)
	for i := range 3 {
		if ok, _ := l.Allow("cron@example.com"); !ok {
			t.Fatalf("after an hour, event %d refused", i)
		}
	}
	if ok, _ := l.Allow("cron@example.com"); ok {
		t.Fatal("burst exceeded after a long idle time")
	}
}

func TestLimiterSlowRate(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	l := NewLimiter(LimiterConfig{Rate: 1.0 / 60, Burst: 1}, clock) // 1/m
	l.Allow("k")
	if ok, retry := l.Allow("k"); ok || retry != time.Minute {
		t.Fatalf("got %v, %v; want refused for 1m", ok, retry)
	}
}

func TestLimiterUnlimited(t *testing.T) {
	t.Parallel()
	l := NewLimiter(LimiterConfig{Rate: 0, Burst: 1}, nil)
	for i := range 1000 {
		if ok, retry := l.Allow("k" + strconv.Itoa(i%3)); !ok || retry != 0 {
			t.Fatalf("unlimited limiter refused: %v", retry)
		}
	}
	if l.Len() != 0 {
		t.Fatalf("unlimited limiter tracks %d keys", l.Len())
	}
}

func TestLimiterIdleEviction(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	l := NewLimiter(LimiterConfig{Rate: 1, Burst: 2, IdleTTL: time.Minute}, clock)
	for i := range 10 {
		l.Allow("old" + strconv.Itoa(i))
	}
	clock.Advance(30 * time.Second)
	l.Allow("new")
	if l.Len() != 11 {
		t.Fatalf("Len = %d before the TTL, want 11", l.Len())
	}
	clock.Advance(31 * time.Second)
	l.Allow("new")
	if l.Len() != 1 {
		t.Fatalf("Len = %d after the TTL, want 1 (only the recent key)", l.Len())
	}
}

// An IdleTTL shorter than the time to refill the burst would hand a key a
// fresh burst early; the limiter raises it.
func TestLimiterIdleTTLCoversRefill(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	l := NewLimiter(LimiterConfig{Rate: 0.1, Burst: 5, IdleTTL: time.Second}, clock) // 50s to refill
	for range 5 {
		l.Allow("k")
	}
	clock.Advance(20 * time.Second) // two tokens back
	l.Allow("other")                // gives eviction a chance
	n := 0
	for {
		if ok, _ := l.Allow("k"); !ok {
			break
		}
		n++
	}
	if n != 2 {
		t.Fatalf("after 20s, %d events allowed, want 2: an unrefilled bucket was forgotten", n)
	}
}

func TestLimiterCapEvictsLeastRecentlyUsed(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	l := NewLimiter(LimiterConfig{Rate: 1, Burst: 1, MaxKeys: 3}, clock)
	l.Allow("a")
	l.Allow("b")
	l.Allow("c")
	l.Allow("a") // a is now the most recent; b the least
	l.Allow("d") // evicts b
	if l.Len() != 3 {
		t.Fatalf("Len = %d, want 3", l.Len())
	}
	if ok, _ := l.Allow("a"); ok {
		t.Fatal("a was evicted (it was used recently) and got a fresh bucket")
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("b was not evicted")
	}
}

func TestLimiterConcurrent(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	l := NewLimiter(LimiterConfig{Rate: 1, Burst: 10, MaxKeys: 50}, clock)
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				if ok, _ := l.Allow("k" + strconv.Itoa((g+i)%5)); ok {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if allowed != 5*10 {
		t.Fatalf("%d events allowed with the clock stopped, want 5 keys × burst 10", allowed)
	}
}

// heapLimit bounds the live heap of a limiter holding DefaultMaxKeys
// buckets. Each tracked key costs its map slot (~30 bytes), the bucket
// (64), its rate.Limiter (80) and the key string (~32): about 210 bytes, so
// 100,000 keys are ~21 MB. 64 MiB leaves room for map growth slack and the
// runtime, and still fails loudly if eviction stops working (a million
// keys would need ~210 MB).
const heapLimit = 64 << 20

func TestLimiterMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("drives a million keys")
	}
	// Not parallel: it measures the process heap.
	clock := newFakeClock()
	l := NewLimiter(LimiterConfig{Rate: 1, Burst: 20, MaxKeys: DefaultMaxKeys}, clock)

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	start := time.Now()
	buf := make([]byte, 0, 64)
	for i := range floodKeys {
		buf = strconv.AppendInt(append(buf[:0], "sender"...), int64(i), 10)
		buf = append(buf, "@flood.example"...)
		if ok, _ := l.Allow(string(buf)); !ok {
			t.Fatalf("key %d refused: every key is new", i)
		}
		if i%1000 == 0 {
			// A flood arrives over time: a millisecond per thousand keys
			// keeps every bucket inside IdleTTL, so only the cap evicts.
			clock.Advance(time.Millisecond)
		}
	}
	elapsed := time.Since(start)

	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(l)

	if n := l.Len(); n > DefaultMaxKeys {
		t.Errorf("Len = %d, above MaxKeys %d", n, DefaultMaxKeys)
	}
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d keys in %v (%.0f ns/key); %d tracked; heap grew %.1f MiB (%.0f bytes/tracked key)",
		floodKeys, elapsed, float64(elapsed.Nanoseconds())/floodKeys, l.Len(), float64(grown)/(1<<20), float64(grown)/float64(l.Len()))
	if grown > heapLimit {
		t.Errorf("heap grew %d bytes, above the %d bound", grown, heapLimit)
	}
}
