package upstream_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"sealpost/internal/fakeclock"
	"sealpost/upstream"
	"sealpost/upstream/upstreamtest"
)

func poolDeliver(t *testing.T, p *upstream.Pool, to ...string) ([]error, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	perRcpt, _, err := p.Deliver(ctx, upstream.Message{From: "app@example.com", To: to}, strings.NewReader(testMessage))
	return perRcpt, err
}

func connections(srv *upstreamtest.Server) int {
	seen := map[int]bool{}
	for _, c := range srv.Commands() {
		seen[c.Conn] = true
	}
	return len(seen)
}

// TestPoolReusesConnections: messages share a connection (with RSET
// between them) until max_messages_per_connection, then a new one opens.
func TestPoolReusesConnections(t *testing.T) {
	t.Parallel()
	f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Users: map[string]string{user: password}})
	p := upstream.NewPool(newClient(t, f.config(t, "starttls")), upstream.PoolConfig{MaxConnections: 1, MaxMessagesPerConnection: 3})
	defer p.Close()
	for i := range 7 {
		if _, err := poolDeliver(t, p, "a@example.org"); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	f.srv.Expect(t, 7)
	// 7 messages, 3 per connection: 3 connections, one AUTH each.
	if n := connections(f.srv); n != 3 {
		t.Errorf("%d connections for 7 messages at 3 per connection, want 3", n)
	}
	auths := 0
	for _, c := range f.srv.Commands() {
		if c.Verb == "AUTH" {
			auths++
		}
	}
	if auths != 3 {
		t.Errorf("%d AUTH commands, want 3", auths)
	}
	if p.Idle() != 1 {
		t.Errorf("%d idle connections after the last message, want 1", p.Idle())
	}
}

// TestPoolBoundsConnections: no more than MaxConnections are open at once,
// however many deliveries run in parallel.
func TestPoolBoundsConnections(t *testing.T) {
	t.Parallel()
	f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Users: map[string]string{user: password}})
	cfg := f.config(t, "starttls")
	var open, peak atomic.Int32
	var d net.Dialer
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		n := open.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		return &countedConn{Conn: c, open: &open}, nil
	}
	p := upstream.NewPool(newClient(t, cfg), upstream.PoolConfig{MaxConnections: 2})
	defer p.Close()
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := poolDeliver(t, p, "a@example.org"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	f.srv.Expect(t, 20)
	if peak.Load() > 2 {
		t.Errorf("%d connections open at once, want at most 2", peak.Load())
	}
}

type countedConn struct {
	net.Conn
	open *atomic.Int32
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.open.Add(-1) })
	return c.Conn.Close()
}

// TestPoolBrokenIdleConnection: an idle connection the upstream dropped is
// replaced, and the message is delivered exactly once.
func TestPoolBrokenIdleConnection(t *testing.T) {
	t.Parallel()
	f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Users: map[string]string{user: password}})
	cfg := f.config(t, "starttls")
	var conns []net.Conn
	var mu sync.Mutex
	var d net.Dialer
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		return c, err
	}
	p := upstream.NewPool(newClient(t, cfg), upstream.PoolConfig{})
	defer p.Close()
	if _, err := poolDeliver(t, p, "a@example.org"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	conns[0].(*net.TCPConn).CloseRead() // the pooled connection is now dead
	conns[0].Close()
	mu.Unlock()
	if _, err := poolDeliver(t, p, "b@example.org"); err != nil {
		t.Fatalf("delivery after the idle connection broke: %v", err)
	}
	msgs := f.srv.Expect(t, 2)
	if len(f.srv.Messages()) != 2 || msgs[1].To[0] != "b@example.org" {
		t.Errorf("upstream got %d messages", len(f.srv.Messages()))
	}
}

// TestPoolBackoff: a dead upstream costs one connection attempt per
// backoff interval, not one per message; the fast failures say when the
// next attempt is due.
func TestPoolBackoff(t *testing.T) {
	t.Parallel()
	f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Users: map[string]string{user: password}})
	cfg := f.config(t, "starttls")
	var dials atomic.Int32
	var up atomic.Bool
	var d net.Dialer
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		if !up.Load() {
			return nil, errors.New("connection refused (test)")
		}
		return d.DialContext(ctx, network, addr)
	}
	clock := fakeclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	p := upstream.NewPool(newClient(t, cfg), upstream.PoolConfig{Backoff: []time.Duration{time.Minute, 5 * time.Minute}, Now: clock.Now})
	defer p.Close()

	_, err := poolDeliver(t, p, "a@example.org")
	var be *upstream.BackoffError
	if err == nil || errors.As(err, &be) {
		t.Fatalf("first delivery: %v, want the dial error itself", err)
	}
	for range 50 {
		_, err := poolDeliver(t, p, "a@example.org")
		if !errors.As(err, &be) || !be.RetryAt().Equal(clock.Now().Add(time.Minute)) || !upstream.IsTemporary(err) {
			t.Fatalf("during the pause: %v, want a BackoffError until +1m", err)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d dials for 51 messages within one interval, want 1", n)
	}
	clock.Advance(time.Minute)
	poolDeliver(t, p, "a@example.org") // the one probe of this interval, fails
	for range 10 {
		if _, err := poolDeliver(t, p, "a@example.org"); !errors.As(err, &be) || !be.RetryAt().Equal(clock.Now().Add(5*time.Minute)) {
			t.Fatalf("after the 2nd failure: %v, want a pause of 5m", err)
		}
	}
	if n := dials.Load(); n != 2 {
		t.Fatalf("%d dials after two intervals, want 2", n)
	}
	up.Store(true)
	clock.Advance(5 * time.Minute)
	if _, err := poolDeliver(t, p, "a@example.org"); err != nil {
		t.Fatalf("upstream back: %v", err)
	}
	if _, err := poolDeliver(t, p, "a@example.org"); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	f.srv.Expect(t, 2)
	if n := dials.Load(); n != 3 {
		t.Errorf("%d dials, want 3 (the second message reuses the connection)", n)
	}
}

// TestPoolKeepsConnectionAfterRefusal: a recipient the server refuses does
// not cost the connection; the next message goes out on the same one.
func TestPoolKeepsConnectionAfterRefusal(t *testing.T) {
	t.Parallel()
	f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Users: map[string]string{user: password},
		RcptReply: func(addr string) *smtp.SMTPError {
			if addr == "gone@example.org" {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
			}
			return nil
		}})
	p := upstream.NewPool(newClient(t, f.config(t, "starttls")), upstream.PoolConfig{MaxConnections: 1, MaxMessagesPerConnection: 10})
	defer p.Close()
	if _, err := poolDeliver(t, p, "gone@example.org"); !errors.Is(err, upstream.ErrAllRecipientsRefused) {
		t.Fatalf("refused recipient: %v", err)
	}
	if _, err := poolDeliver(t, p, "a@example.org"); err != nil {
		t.Fatal(err)
	}
	f.srv.Expect(t, 1)
	if n := connections(f.srv); n != 1 {
		t.Errorf("%d connections, want 1: the refusal closed a healthy connection", n)
	}
}

// TestPoolConcurrentFailuresAreOne: workers that dial a dead upstream at the
// same moment (as after a restart) see one failure of it, not several in a
// row: the pause is the first interval, not the longest.
func TestPoolConcurrentFailuresAreOne(t *testing.T) {
	t.Parallel()
	f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Users: map[string]string{user: password}})
	cfg := f.config(t, "starttls")
	const workers = 4
	var waiting sync.WaitGroup
	waiting.Add(workers)
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		// Fail only once every worker is dialling.
		waiting.Done()
		waiting.Wait()
		return nil, errors.New("connection refused (test)")
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	p := upstream.NewPool(newClient(t, cfg), upstream.PoolConfig{
		MaxConnections: workers,
		Backoff:        []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour},
		Now:            clock,
	})
	defer p.Close()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() { poolDeliver(t, p, "a@example.org") })
	}
	wg.Wait()
	_, err := poolDeliver(t, p, "a@example.org")
	var be *upstream.BackoffError
	if !errors.As(err, &be) || !be.RetryAt().Equal(now.Add(time.Minute)) {
		t.Fatalf("after %d dials failed together: %v, want a pause until +1m", workers, err)
	}
}

// hangingDeadPool is a pool over a dead upstream (every dial is refused)
// whose hang-th dial hangs until release is closed: a dial or TLS
// handshake that lasts until its timeout. Its clock is moved by hand.
type hangingDeadPool struct {
	p                *upstream.Pool
	calls            atomic.Int32
	started, release chan struct{}
	clock            *fakeclock.Clock
}

func newHangingDeadPool(t *testing.T, hang int32, backoff ...time.Duration) *hangingDeadPool {
	t.Helper()
	f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Users: map[string]string{user: password}})
	cfg := f.config(t, "starttls")
	h := &hangingDeadPool{started: make(chan struct{}), release: make(chan struct{}), clock: fakeclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))}
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if h.calls.Add(1) == hang {
			close(h.started)
			<-h.release
		}
		return nil, errors.New("connection refused (test)")
	}
	h.p = upstream.NewPool(newClient(t, cfg), upstream.PoolConfig{MaxConnections: 2, Backoff: backoff, Now: h.clock.Now})
	t.Cleanup(h.p.Close)
	return h
}

// TestPoolSlowFailureDuringPause: a dial that began before another's
// failure started the pause, and fails only after the pause is over (a
// TLS handshake or AUTH that hung until its timeout), does not lengthen
// it: the next delivery is the probe, not a fast failure.
func TestPoolSlowFailureDuringPause(t *testing.T) {
	t.Parallel()
	h := newHangingDeadPool(t, 1, time.Minute, 5*time.Minute)
	p := h.p

	slow := make(chan error, 1)
	go func() { _, err := poolDeliver(t, p, "a@example.org"); slow <- err }()
	<-h.started
	if _, err := poolDeliver(t, p, "b@example.org"); err == nil {
		t.Fatal("a delivery to a dead upstream succeeded")
	}
	h.clock.Advance(2 * time.Minute) // the first pause is over
	close(h.release)
	<-slow
	_, err := poolDeliver(t, p, "c@example.org")
	var be *upstream.BackoffError
	if errors.As(err, &be) {
		t.Fatalf("after the slow dial failed: %v; want the probe of the next interval, not a longer pause", err)
	}
	if n := h.calls.Load(); n != 3 {
		t.Errorf("%d dials, want 3 (slow, fast, probe)", n)
	}
}

// TestPoolRetryNowOutlivesDialInFlight: `queue flush` (RetryNow) says the
// upstream is back. A probe that began before it (hanging in its dial or
// TLS handshake until a timeout) neither holds back the deliveries after
// the flush, nor, failing after it, starts a new and longer pause, which
// would undo the flush: the spool holds the whole queue for a pause, up to
// the last retry interval.
func TestPoolRetryNowOutlivesDialInFlight(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// probeFailsFirst: the hanging probe fails before the next
		// delivery; otherwise that delivery comes while it hangs.
		probeFailsFirst bool
	}{
		{"probe fails after the flush", true},
		{"delivery while the probe hangs", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHangingDeadPool(t, 2, time.Minute, time.Hour)
			p := h.p

			if _, err := poolDeliver(t, p, "a@example.org"); err == nil {
				t.Fatal("a delivery to a dead upstream succeeded")
			}
			h.clock.Advance(2 * time.Minute) // the first pause is over: the next delivery probes
			probe := make(chan error, 1)
			go func() { _, err := poolDeliver(t, p, "b@example.org"); probe <- err }()
			<-h.started
			p.RetryNow() // the operator: the upstream is back
			if tc.probeFailsFirst {
				close(h.release)
				<-probe
			}
			_, err := poolDeliver(t, p, "c@example.org")
			var be *upstream.BackoffError
			if errors.As(err, &be) {
				t.Fatalf("after RetryNow: %v; want a dial, not a pause", err)
			}
			if !tc.probeFailsFirst {
				close(h.release)
				<-probe
			}
			if n := h.calls.Load(); n != 3 {
				t.Errorf("%d dials, want 3 (first, the probe, the one after the flush)", n)
			}
		})
	}
}
