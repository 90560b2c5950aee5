package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// PoolConfig bounds how a Pool uses the upstream.
type PoolConfig struct {
	// MaxConnections is the number of connections open at once (busy or
	// idle); default 4. Callers beyond it wait for a free one.
	MaxConnections int
	// MaxMessagesPerConnection is how many messages one connection carries
	// before it is closed (providers cap this, e.g. Gmail at 100); default 100.
	MaxMessagesPerConnection int
	// IdleTimeout closes a connection that has waited this long for the
	// next message; default 30s, well under the 5 minutes after which
	// RFC 5321 lets a server drop an idle client.
	IdleTimeout time.Duration
	// Backoff is the pause after the 1st, 2nd, … consecutive failure to
	// connect (dial, TLS, EHLO, AUTH); the last entry repeats. Default 1m,
	// 5m, 15m, 1h. During the pause Deliver fails fast with a
	// *BackoffError without dialling.
	Backoff []time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Pool delivers through a Client, keeping a few connections open between
// messages (RSET between transactions) and backing off from an upstream
// that cannot be reached, so a dead upstream costs one connection attempt
// per backoff interval however many messages wait.
type Pool struct {
	c    *Client
	cfg  PoolConfig
	slot chan struct{} // one token per connection that may exist

	mu       sync.Mutex
	idle     []*pooled
	closed   bool
	failures int       // consecutive failures to connect
	retryAt  time.Time // no dialling before this
	probing  bool      // one caller is testing whether the upstream is back
	lastErr  error     // the failure that started the pause
	// counted grows with every failure counted in failures; a dial that
	// sees it changed since it began failed together with that one.
	counted uint64
}

type pooled struct {
	s     *session
	sent  int
	timer *time.Timer // closes the connection after IdleTimeout
}

// BackoffError is returned by Pool.Deliver, without any network traffic,
// while the upstream is in its backoff pause after failed connections.
// The spool recognises RetryAt: the attempt does not count against the
// message, and deliveries pause until then.
type BackoffError struct {
	Until time.Time
	Last  error // the failure that started the pause
}

func (e *BackoffError) Error() string {
	return fmt.Sprintf("upstream unreachable, next connection attempt at %s: %v", e.Until.UTC().Format(time.RFC3339), e.Last)
}
func (e *BackoffError) Unwrap() error        { return e.Last }
func (e *BackoffError) Temporary() bool      { return true }
func (e *BackoffError) RetryAt() time.Time   { return e.Until }
func (e *BackoffError) Is(target error) bool { return target == ErrBackoff }

// ErrBackoff matches a *BackoffError with errors.Is.
var ErrBackoff = errors.New("upstream in backoff")

// NewPool wraps c; cfg's zero values take the documented defaults.
func NewPool(c *Client, cfg PoolConfig) *Pool {
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = 4
	}
	if cfg.MaxMessagesPerConnection <= 0 {
		cfg.MaxMessagesPerConnection = 100
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 30 * time.Second
	}
	if len(cfg.Backoff) == 0 {
		cfg.Backoff = []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p := &Pool{c: c, cfg: cfg, slot: make(chan struct{}, cfg.MaxConnections)}
	return p
}

// Deliver is Client.Deliver over a pooled connection; see there for how
// perRcpt and err combine. A message is never sent twice by the pool: a
// reused connection that turns out broken is replaced by a fresh one only
// when the failure came before the upstream accepted MAIL.
func (p *Pool) Deliver(ctx context.Context, msg Message, body io.Reader) (perRcpt []error, info DeliveryInfo, err error) {
	start := time.Now()
	defer func() { info.Duration = time.Since(start) }()
	if len(msg.To) == 0 {
		return nil, info, &Error{Op: "rcpt", Err: errors.New("message has no recipients")}
	}
	probe, err := p.gate()
	if err != nil {
		return nil, info, err
	}
	select {
	case p.slot <- struct{}{}:
	case <-ctx.Done():
		if probe {
			p.endProbe()
		}
		return nil, info, &Error{Op: "dial", Err: context.Cause(ctx)}
	}
	defer func() { <-p.slot }()

	for reused := !probe; ; reused = false {
		var pc *pooled
		if reused {
			pc = p.take()
		}
		if pc == nil {
			reused = false
			if pc, err = p.dial(ctx); err != nil {
				return nil, info, err
			}
		}
		info.TLSVersion, info.CipherSuite = pc.s.tlsInfo()
		perRcpt, info.Reply, err = pc.s.send(ctx, msg, body)
		if err == nil {
			pc.sent++
			p.put(pc)
			return perRcpt, info, nil
		}
		if refusedCleanly(err) && !pc.s.broken && ctx.Err() == nil {
			// The server answered and the dialogue is intact: the next
			// message can use the connection (send begins it with RSET).
			pc.sent++
			p.put(pc)
			return perRcpt, info, err
		}
		pc.s.close()
		if reused && staleConnection(err) && ctx.Err() == nil {
			continue
		}
		return perRcpt, info, err
	}
}

// gate fails fast during a backoff pause and lets a single caller probe
// the upstream (on a fresh connection) once the pause is over.
func (p *Pool) gate() (probe bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failures == 0 {
		return false, nil
	}
	now := p.cfg.Now()
	if now.Before(p.retryAt) {
		return false, &BackoffError{Until: p.retryAt, Last: p.lastErr}
	}
	if p.probing {
		// Someone is finding out; ask again shortly rather than dial too.
		return false, &BackoffError{Until: now.Add(time.Second), Last: p.lastErr}
	}
	p.probing = true
	return true, nil
}

func (p *Pool) endProbe() {
	p.mu.Lock()
	p.probing = false
	p.mu.Unlock()
}

// dial opens a fresh session and updates the backoff state.
func (p *Pool) dial(ctx context.Context) (*pooled, error) {
	p.mu.Lock()
	began := p.counted
	p.mu.Unlock()
	s, err := p.c.openWithSecret(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.probing = false
	if err != nil {
		if s != nil {
			s.close()
		}
		// Dials that fail together (every worker at once, after a
		// restart; or one that took longer than the pause another's
		// failure started) are one failure of the upstream: only a dial
		// during which no other failure was counted lengthens the pause.
		if ctx.Err() == nil && p.counted == began {
			p.counted++
			p.failures++
			p.lastErr = err
			p.retryAt = p.cfg.Now().Add(p.cfg.Backoff[min(p.failures, len(p.cfg.Backoff))-1])
		}
		return nil, err
	}
	p.failures, p.lastErr = 0, nil
	return &pooled{s: s}, nil
}

// take returns an idle connection, or nil. Whether it is still alive is
// found out by the RSET that send puts before the next MAIL (in the same
// write when the upstream pipelines).
func (p *Pool) take() *pooled {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.idle)
	if n == 0 {
		return nil
	}
	pc := p.idle[n-1]
	p.idle = p.idle[:n-1]
	pc.timer.Stop()
	return pc
}

// put keeps a connection for the next message, or closes it when it has
// carried its share.
func (p *Pool) put(pc *pooled) {
	p.mu.Lock()
	if p.closed || pc.sent >= p.cfg.MaxMessagesPerConnection {
		p.mu.Unlock()
		pc.s.quit()
		pc.s.close()
		return
	}
	p.idle = append(p.idle, pc)
	pc.timer = time.AfterFunc(p.cfg.IdleTimeout, func() { p.expire(pc) })
	p.mu.Unlock()
}

func (p *Pool) expire(pc *pooled) {
	p.mu.Lock()
	for i, x := range p.idle {
		if x == pc {
			p.idle = append(p.idle[:i], p.idle[i+1:]...)
			p.mu.Unlock()
			pc.s.quit()
			pc.s.close()
			return
		}
	}
	p.mu.Unlock()
}

// Close quits the idle connections; later deliveries still work but keep
// no connection open.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, pc := range idle {
		pc.timer.Stop()
		pc.s.quit()
		pc.s.close()
	}
}

// RetryNow ends a backoff pause (`queue flush`: the operator says the
// upstream is back); the next delivery dials.
func (p *Pool) RetryNow() {
	p.mu.Lock()
	p.retryAt = time.Time{}
	// A dial in flight began before the operator's word: its failure
	// says nothing about the upstream since, so it must not count, and
	// a probe hanging until its timeout must not hold back the next one.
	p.counted++
	p.probing = false
	p.mu.Unlock()
}

// Idle reports how many connections wait for a message (for tests and
// the log).
func (p *Pool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// openWithSecret loads the secret and opens a session, as Deliver does.
// An OAuth2 access token the server refuses (revoked, or expired early)
// is replaced once; see openRetryingToken in oauth2_client.go.
func (c *Client) openWithSecret(ctx context.Context) (*session, error) {
	if c.cfg.TokenRefused != nil {
		return c.openRetryingToken(ctx)
	}
	secret, err := c.loadSecret(ctx)
	if err != nil {
		return nil, err
	}
	return c.open(ctx, secret)
}

func (c *Client) loadSecret(ctx context.Context) (Secret, error) {
	if c.cfg.Secret == nil {
		return Secret{}, nil
	}
	secret, err := c.cfg.Secret(ctx)
	if err == nil && secret.IsZero() {
		err = errors.New("the secret is empty")
	}
	if err != nil {
		return Secret{}, &Error{Op: "auth", Message: "loading the upstream password", Err: err}
	}
	return secret, nil
}

// staleConnection reports whether a reused connection failed before any
// of the message could have been accepted: RSET went unanswered or was
// refused, or MAIL met a dead connection or a 421 (server timeout,
// shutting down). A fresh connection is then safe.
func staleConnection(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Op == "rset" || e.Op == "mail" && (e.Code == 0 || e.Code == 421)
}

// refusedCleanly reports whether err is the upstream refusing this message
// at MAIL or RCPT (other than 421 closing the connection) rather than a
// broken connection: only then may the connection be reused. A refusal in
// DATA is not trusted: the server may have answered before the body ended,
// and a reply left unread would be taken for the next command's.
func refusedCleanly(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Op {
	case "mail", "rcpt":
	default:
		return false
	}
	return (e.Code >= 400 && e.Code != 421) || errors.Is(err, ErrAllRecipientsRefused)
}
