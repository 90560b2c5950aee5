package policy

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Clock tells the time. Tests pass a fake one so refill can be driven
// without sleeping.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// DefaultMaxKeys caps the buckets a Limiter tracks when LimiterConfig leaves
// it 0. At about 250 bytes a bucket, 100,000 buckets are some 25 MB: enough
// senders for any one host, small enough to hold under a flood.
const DefaultMaxKeys = 100_000

// DefaultIdleTTL is how long a bucket may sit unused before it is forgotten,
// unless refilling its burst takes longer.
const DefaultIdleTTL = 10 * time.Minute

// LimiterConfig configures a Limiter.
type LimiterConfig struct {
	// Rate is events per second; 0 or less means unlimited.
	Rate float64
	// Burst is how many events may come at once; less than 1 means 1.
	Burst int
	// MaxKeys caps the keys tracked; 0 or less means DefaultMaxKeys.
	MaxKeys int
	// IdleTTL is how long an unused bucket is kept; 0 or less means
	// DefaultIdleTTL. It is never less than the time to refill Burst, so
	// that forgetting a bucket never grants tokens it had not earned.
	IdleTTL time.Duration
}

// Limiter is a set of token buckets, one per key (a sender, a client
// address). Allow never blocks. Memory is bounded by MaxKeys whatever the
// number of distinct keys: idle buckets are forgotten, and when the table is
// full the least recently used bucket is.
//
// Keys are compared exactly: callers lowercase addresses (and use one
// spelling of an IP) so that "Cron@Example.com" and "cron@example.com" share
// a bucket.
type Limiter struct {
	limit   rate.Limit
	burst   int
	maxKeys int
	idleTTL time.Duration
	clock   Clock

	mu      sync.Mutex
	buckets map[string]*bucket
	// An intrusive list in order of last use, most recent at head. Because
	// it is in order of use, the idle buckets are all at the tail, so
	// eviction only ever looks at the tail: O(1) per Allow, amortised.
	head, tail *bucket
}

type bucket struct {
	key        string
	lim        *rate.Limiter
	used       time.Time
	prev, next *bucket
}

// NewLimiter returns a Limiter; a nil clock means the real time.
func NewLimiter(cfg LimiterConfig, clock Clock) *Limiter {
	if clock == nil {
		clock = realClock{}
	}
	l := &Limiter{clock: clock, burst: max(cfg.Burst, 1), maxKeys: cfg.MaxKeys, idleTTL: cfg.IdleTTL}
	if cfg.Rate <= 0 {
		l.limit = rate.Inf
		return l
	}
	l.limit = rate.Limit(cfg.Rate)
	if l.maxKeys <= 0 {
		l.maxKeys = DefaultMaxKeys
	}
	if l.idleTTL <= 0 {
		l.idleTTL = DefaultIdleTTL
	}
	// Forgetting a bucket is safe only once it has refilled: a fresh bucket
	// is full, so a bucket that is full anyway loses nothing.
	refill := time.Duration(math.Ceil(float64(l.burst) / cfg.Rate * float64(time.Second)))
	l.idleTTL = max(l.idleTTL, refill)
	l.buckets = make(map[string]*bucket)
	return l
}

// Allow reports whether one event for key may happen now, and consumes a
// token if so. When it may not, retryAfter is how long until a token will
// be available (0 when ok).
func (l *Limiter) Allow(key string) (ok bool, retryAfter time.Duration) {
	if l.limit == rate.Inf {
		return true, 0
	}
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()

	l.evictIdle(now)
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.maxKeys {
			// Full of buckets that are all in use: forget the least recently
			// used one. If it was not full, its key gets a fresh burst; that
			// is the price of a hard cap on memory, paid only by a flood of
			// more than MaxKeys distinct keys within IdleTTL, which the
			// per-client and global limits still hold back.
			l.remove(l.tail)
		}
		b = &bucket{key: key, lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[key] = b
	} else {
		l.unlink(b)
	}
	b.used = now
	l.pushFront(b)

	if b.lim.AllowN(now, 1) {
		return true, 0
	}
	missing := 1 - b.lim.TokensAt(now)
	wait := time.Duration(math.Ceil(missing / float64(l.limit) * float64(time.Second)))
	return false, max(wait, time.Nanosecond)
}

// Len reports how many keys are tracked.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// evictIdle forgets buckets unused for idleTTL. A bucket idle that long has
// refilled to its burst (idleTTL is at least the refill time), and a fresh
// bucket starts at its burst, so the key loses nothing and gains nothing.
func (l *Limiter) evictIdle(now time.Time) {
	cutoff := now.Add(-l.idleTTL)
	for l.tail != nil && !l.tail.used.After(cutoff) {
		l.remove(l.tail)
	}
}

func (l *Limiter) remove(b *bucket) {
	l.unlink(b)
	delete(l.buckets, b.key)
}

func (l *Limiter) unlink(b *bucket) {
	if b.prev != nil {
		b.prev.next = b.next
	} else {
		l.head = b.next
	}
	if b.next != nil {
		b.next.prev = b.prev
	} else {
		l.tail = b.prev
	}
	b.prev, b.next = nil, nil
}

func (l *Limiter) pushFront(b *bucket) {
	b.next = l.head
	if l.head != nil {
		l.head.prev = b
	}
	l.head = b
	if l.tail == nil {
		l.tail = b
	}
}
