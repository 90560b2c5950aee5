package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"sealpost/policy"
	"sealpost/spool"
	"sealpost/upstream"
)

// routeUpstream is one upstream as the delivery loop uses it: its own
// pool (its client, connections and backoff), pacing and OAuth2 token cache.
type routeUpstream struct {
	name   string
	cfg    UpstreamConfig
	pool   *upstream.Pool
	pacer  *pacer
	tokens *upstream.OAuth2Tokens // nil without [oauth2]
}

// router picks the upstream for each delivery. Routes are read from the
// live configuration at delivery time, so a reload that changes them
// applies to mail already queued; the set of upstreams (connections,
// credentials) is fixed until a restart. Nothing about the route is stored
// in the spool.
type router struct {
	byName map[string]*routeUpstream
	def    *routeUpstream
	routes func() []RouteConfig
	log    *slog.Logger
	now    func() time.Time

	// lastUsed remembers, per message in an attempt, the upstream the
	// attempt went to, so the spool's records of it can name it; the entry
	// goes with the attempt's last record (deferred, or the final one).
	lastUsed sync.Map // spool.ID → *routeUpstream

	deliveries *prometheus.CounterVec // nil without metrics
}

// newRouter builds a client and a pool per upstream. Secrets are read
// once here so a missing password or refresh token file stops the start.
func newRouter(ctx context.Context, cfg *Config, log *slog.Logger, now func() time.Time, routes func() []RouteConfig) (*router, error) {
	rt := &router{byName: map[string]*routeUpstream{}, routes: routes, log: log, now: now}
	for _, name := range cfg.UpstreamNames() {
		u, _ := cfg.UpstreamByName(name)
		ru, err := newRouteUpstream(ctx, cfg, name, u, log, now)
		if err != nil {
			if name == DefaultUpstream {
				return nil, err
			}
			return nil, fmt.Errorf("upstreams.%s: %w", name, err)
		}
		rt.byName[name] = ru
	}
	rt.def = rt.byName[DefaultUpstream]
	return rt, nil
}

func newRouteUpstream(ctx context.Context, cfg *Config, name string, u UpstreamConfig, log *slog.Logger, now func() time.Time) (*routeUpstream, error) {
	// The TLS settings are built by the same code as [upstream]'s.
	view := *cfg
	view.Upstream = u
	tlsConf, err := view.ClientTLS()
	if err != nil {
		return nil, fmt.Errorf("upstream TLS: %w", err)
	}
	ru := &routeUpstream{name: name, cfg: u, pacer: &pacer{interval: u.paceInterval()}}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var (
		secret  func(context.Context) (upstream.Secret, error)
		refused func(upstream.Secret)
	)
	switch o := u.OAuth2; {
	case o.Set():
		for what, src := range map[string]*upstream.SecretSource{"oauth2 client secret": o.ClientSecret(), "oauth2 refresh token": o.RefreshToken()} {
			if src == nil {
				continue
			}
			if _, err := src.Load(ctx); err != nil {
				return nil, fmt.Errorf("%s: %w", what, err)
			}
		}
		ru.tokens, err = upstream.NewOAuth2Tokens(upstream.OAuth2Config{
			Flow: o.Flow, TokenURL: o.TokenURL, ClientID: o.ClientID, Scopes: o.Scopes,
			ClientSecret: o.ClientSecret(), RefreshToken: o.RefreshToken(),
			Now: now, Log: log.With(slog.String("upstream", name)),
		})
		if err != nil {
			return nil, err
		}
		secret, refused = ru.tokens.Secret, ru.tokens.Refused
	case u.Username != "":
		src := upstream.SecretSource{File: u.PasswordFile, Env: u.PasswordEnv, Command: u.PasswordCommand, Credential: u.Credential}
		if err := src.Validate(); err != nil {
			return nil, err
		}
		if _, err := src.Load(ctx); err != nil {
			return nil, fmt.Errorf("upstream secret: %w", err)
		}
		secret = src.Load
	}
	client, err := upstream.NewClient(clientConfig(cfg.Hostname, u, tlsConf, secret, refused))
	if err != nil {
		return nil, err
	}
	ru.pool = upstream.NewPool(client, upstream.PoolConfig{
		MaxConnections:           u.MaxConnections,
		MaxMessagesPerConnection: u.MaxMessagesPerConnection,
		Backoff:                  durations(cfg.Spool.RetryIntervals),
	})
	return ru, nil
}

// route is the upstream for an envelope sender: the first matching route,
// else [upstream]. Bounces (null sender) always take [upstream].
func (rt *router) route(from string) *routeUpstream {
	if from == "" || rt.routes == nil {
		return rt.def
	}
	for _, r := range rt.routes() {
		if (policy.SenderRules{AllowedSenders: []string{r.Sender}}).CheckEnvelopeSender(from) != nil {
			continue
		}
		if u := rt.byName[r.Upstream]; u != nil {
			return u
		}
		rt.log.Warn("route names an upstream added after the start; using [upstream] until a restart", slog.String("upstream", r.Upstream), slog.String("sender", r.Sender))
		return rt.def
	}
	return rt.def
}

// candidates is the routed upstream followed by its failover list.
func (rt *router) candidates(from string) []*routeUpstream {
	first := rt.route(from)
	out := []*routeUpstream{first}
	for _, name := range first.cfg.Failover {
		if u := rt.byName[name]; u != nil && !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out
}

func (rt *router) all() []*routeUpstream {
	out := make([]*routeUpstream, 0, len(rt.byName))
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range rt.byName {
			if !yield(n) {
				return
			}
		}
	}) {
		out = append(out, rt.byName[name])
	}
	return out
}

// retryNow ends every upstream's backoff pause (`queue flush`).
func (rt *router) retryNow() {
	for _, u := range rt.byName {
		u.pool.RetryNow()
	}
}

func (rt *router) close() {
	for _, u := range rt.byName {
		u.pool.Close()
	}
}

// usedFor returns the upstream of a message's last attempt. One attempt
// may yield several events (delivered, failed, deferred); all name it.
func (rt *router) usedFor(id spool.ID) *routeUpstream {
	if v, ok := rt.lastUsed.Load(id); ok {
		return v.(*routeUpstream)
	}
	return rt.def
}

// forget drops what usedFor knows of a message that left the queue.
func (rt *router) forget(id spool.ID) { rt.lastUsed.Delete(id) }

// registerMetrics adds the per-upstream delivery counter to the relay's
// registry.
func (rt *router) registerMetrics(reg *prometheus.Registry) {
	if reg == nil {
		return
	}
	rt.deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sealpost_upstream_attempts_total",
		Help: "Delivery attempts by upstream (its name: \"default\" for [upstream]) and result: delivered, failed (refused or error), unreachable (failed over or deferred before MAIL), paced (held back by upstream.rate), backoff (held back by the upstream's backoff).",
	}, []string{"upstream", "result"})
	for _, u := range rt.all() {
		for _, res := range []string{"delivered", "failed", "unreachable", "paced", "backoff"} {
			rt.deliveries.WithLabelValues(u.name, res)
		}
	}
	reg.MustRegister(rt.deliveries)
}

func (rt *router) count(u *routeUpstream, result string) {
	if rt.deliveries != nil {
		rt.deliveries.WithLabelValues(u.name, result).Inc()
	}
}

// pacer is a token bucket of depth one: at most one delivery attempt per
// interval, so a burst drains at the configured rate instead of earning a
// block from the provider. It never blocks; it says when to come back.
type pacer struct {
	interval time.Duration
	mu       sync.Mutex
	next     time.Time
}

func (p *pacer) take(now time.Time) (ok bool, retryAt time.Time) {
	if p == nil || p.interval <= 0 {
		return true, time.Time{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if now.Before(p.next) {
		return false, p.next
	}
	p.next = now.Add(p.interval)
	return true, time.Time{}
}

// pauseError tells the spool to hold back the messages of one upstream
// until a time, without counting an attempt: the upstream is paced or in
// backoff. PauseKey scopes the pause, so mail for other upstreams flows.
type pauseError struct {
	upstream string
	until    time.Time
	reason   string // "paced" or "backoff"
	last     error
	// only: the upstream is the only one configured, so every queued
	// message waits for it.
	only bool
}

func (e *pauseError) Error() string {
	msg := fmt.Sprintf("upstream %s %s until %s", e.upstream, e.reason, e.until.UTC().Format(time.RFC3339))
	if e.last != nil {
		msg += ": " + e.last.Error()
	}
	return msg
}
func (e *pauseError) Unwrap() error      { return e.last }
func (e *pauseError) Temporary() bool    { return true }
func (e *pauseError) RetryAt() time.Time { return e.until }

// PauseKey is empty when the upstream is the only one: the spool then
// holds back the whole queue. A keyed pause holds back only the messages
// whose own attempt met it, so each message would be read and handed to
// the deliverer once more during every pause; after a restart with the
// upstream down, that is the whole queue.
func (e *pauseError) PauseKey() string {
	if e.only {
		return ""
	}
	return "upstream:" + e.upstream
}

// unreachable reports whether err means the upstream was not talked to as
// far as MAIL: nothing of the message went out, so another upstream may
// carry it.
func unreachable(err error) bool {
	if errors.Is(err, upstream.ErrBackoff) {
		return true
	}
	var tlsErr *upstream.TLSError
	if errors.As(err, &tlsErr) {
		return true
	}
	var e *upstream.Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Op {
	case "dial", "greeting", "ehlo", "starttls", "tls":
		return true
	}
	return false
}

// routingDeliverer is the spool's Deliverer: it routes, paces, fails over
// and records which upstream carried each message.
type routingDeliverer struct {
	rt      *router
	audit   *auditLog
	log     *slog.Logger
	rewrite func() RewriteConfig
	// hardStop ends deliveries in flight. The spool's own context only
	// stops new attempts at shutdown: a transfer cut off after the upstream
	// took the message but before its reply arrived would be sent again.
	hardStop context.Context
}

func (d *routingDeliverer) Deliver(ctx context.Context, id spool.ID, env spool.Envelope, to []string, body io.Reader) ([]error, error) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	defer context.AfterFunc(d.hardStop, cancel)()

	var pause *pauseError
	var lastErr error
	cands := d.rt.candidates(env.From)
	for i, u := range cands {
		if ok, at := u.pacer.take(d.rt.now()); !ok {
			d.rt.count(u, "paced")
			if i == 0 {
				// The route's own upstream is merely busy: wait for it
				// rather than spill onto the failover ones.
				return nil, d.rt.pauseError(u, at, "paced", nil)
			}
			pause = earlier(pause, d.rt.pauseError(cands[0], at, "paced", nil))
			continue
		}
		msg := upstream.Message{From: d.envelopeFrom(env.From, u), To: to, SMTPUTF8: env.SMTPUTF8, Size: env.Size}
		perRcpt, info, err := u.pool.Deliver(ctx, msg, body)
		var backoff *upstream.BackoffError
		if !errors.As(err, &backoff) {
			// Only an attempt gets events that name its upstream; a
			// message held back by a backoff gets none, and keeping an
			// entry for each would grow with the queue in an outage.
			d.rt.lastUsed.Store(id, u)
		}
		if backoff != nil {
			d.rt.count(u, "backoff")
			d.audit.metrics.upstreamAttempt(err, info, env.Received)
			// Keyed by the routed upstream: its messages wait, others
			// flow (with one upstream, the whole queue waits: PauseKey).
			pause = earlier(pause, d.rt.pauseError(cands[0], backoff.Until, "backoff", backoff.Last))
			lastErr = err
			continue
		}
		d.audit.metrics.upstreamAttempt(err, info, env.Received)
		if err != nil && unreachable(err) && ctx.Err() == nil && i+1 < len(cands) {
			d.rt.count(u, "unreachable")
			d.log.Warn("upstream unreachable; trying the next in its failover list",
				slog.String("queue_id", string(id)), slog.String("upstream", u.name), slog.String("next", cands[i+1].name), slog.String("error", err.Error()))
			lastErr = err
			continue
		}
		d.logAuthTrouble(u, err)
		if err != nil {
			if unreachable(err) {
				d.rt.count(u, "unreachable")
			} else {
				d.rt.count(u, "failed")
			}
			return perRcpt, err
		}
		d.rt.count(u, "delivered")
		var accepted []string
		for i, rcptErr := range perRcpt {
			if rcptErr == nil {
				accepted = append(accepted, to[i])
			}
		}
		if len(accepted) > 0 {
			d.audit.record("delivered",
				slog.String("queue_id", string(id)),
				slog.String("mail_from", env.From),
				slog.Any("rcpt", accepted),
				slog.String("upstream", u.cfg.Addr),
				slog.String("upstream_name", u.name),
				slog.String("upstream_reply", info.Reply),
				slog.String("tls", info.TLSVersion),
				slog.Int64("duration_ms", info.Duration.Milliseconds()),
				envelopeAttrs(env))
		}
		return perRcpt, nil
	}
	if pause != nil && (lastErr == nil || errors.Is(lastErr, upstream.ErrBackoff)) {
		// Every candidate was paced or in backoff, or the last ones were:
		// the spool records nothing for this, so nothing is remembered.
		d.rt.forget(id)
		return nil, pause
	}
	return nil, lastErr
}

func (rt *router) pauseError(u *routeUpstream, until time.Time, reason string, last error) *pauseError {
	return &pauseError{upstream: u.name, until: until, reason: reason, last: last, only: len(rt.byName) == 1}
}

func earlier(a, b *pauseError) *pauseError {
	if a == nil || b.until.Before(a.until) {
		return b
	}
	return a
}

// envelopeFrom applies rewrite.envelope_from. A null sender stays null: a
// bounce must not get a return path that could bounce again.
func (d *routingDeliverer) envelopeFrom(from string, u *routeUpstream) string {
	if from == "" || d.rewrite == nil {
		return from
	}
	switch rw := d.rewrite(); rw.EnvelopeFrom {
	case "":
		return from
	case "account":
		return u.cfg.Username
	default:
		return rw.EnvelopeFrom
	}
}

// logAuthTrouble makes a refused credential impossible to miss: the mail
// stays queued, and only the operator can fix it.
func (d *routingDeliverer) logAuthTrouble(u *routeUpstream, err error) {
	switch {
	case err == nil:
	case errors.Is(err, upstream.ErrAuthRejected) && u.tokens != nil:
		d.log.Error("upstream refused the OAuth2 access token, also after one refresh; mail stays queued and is retried: check the grant (scopes, consent, SMTP AUTH enabled for the mailbox)",
			slog.String("upstream", u.name), slog.String("user", u.cfg.Username), slog.String("error", err.Error()))
	case errors.Is(err, upstream.ErrTokenEndpoint):
		d.log.Error("no OAuth2 access token for the upstream; mail stays queued and is retried",
			slog.String("upstream", u.name), slog.String("error", err.Error()))
	}
}

// upstreamEventAttrs names the upstream of a message's last attempt in the
// spool's records.
func (r *Relay) upstreamEventAttrs(e spool.Event) []slog.Attr {
	if r.routes == nil {
		return spoolEventAttrs(r.cfg.Upstream.Addr, e)
	}
	u := r.routes.usedFor(e.ID)
	attrs := spoolEventAttrs(u.cfg.Addr, e)
	switch e.Kind {
	case spool.EventDeferred, spool.EventFailed, spool.EventExpired:
		attrs = append(attrs, slog.String("upstream_name", u.name))
	}
	return attrs
}

// now is the relay's clock (Options.Clock in tests).
func (r *Relay) now() time.Time {
	if r.clock != nil {
		return r.clock.Now()
	}
	return time.Now()
}

// liveRoutes and liveRewrite read the configuration in force (SIGHUP may
// change both).
func (r *Relay) liveRoutes() []RouteConfig {
	if live := r.live.Load(); live != nil {
		return live.cfg.Routes
	}
	return r.cfg.Routes
}

func (r *Relay) liveRewrite() RewriteConfig {
	if live := r.live.Load(); live != nil {
		return live.cfg.Rewrite
	}
	return r.cfg.Rewrite
}

func (m *metrics) registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// clientConfig is the upstream client configuration for u; the relay and
// check's probe differ only in how they obtain the secret.
func clientConfig(hostname string, u UpstreamConfig, tlsConf *tls.Config, secret func(context.Context) (upstream.Secret, error), refused func(upstream.Secret)) upstream.Config {
	return upstream.Config{
		Addr:           u.Addr,
		TLSMode:        u.TLS,
		TLS:            tlsConf,
		Hostname:       hostname,
		Username:       u.Username,
		Auth:           upstream.Mechanism(u.Auth),
		Secret:         secret,
		TokenRefused:   refused,
		DialTimeout:    time.Duration(u.DialTimeout),
		CommandTimeout: time.Duration(u.CommandTimeout),
	}
}
