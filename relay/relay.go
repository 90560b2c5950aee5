// Package relay joins sealpost's parts into the running relay: it loads the
// configuration, listens for submissions (TCP on loopback and a unix socket),
// runs each SMTP session through the pipeline of one message (read, check,
// edit, spool, only then 250), and drives the spool's delivery loop with the
// upstream client.
package relay

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"sealpost/policy"
	"sealpost/spool"
)

// Options are the relay's dependencies that do not come from the file.
type Options struct {
	Logger *slog.Logger // operational log and audit records; default discards
	// Context bounds New's start-up: reading the upstreams' secrets (a
	// password_command is killed when it ends). Nil is
	// context.Background().
	Context context.Context
	// ShutdownGrace bounds how long Run waits for sessions and deliveries
	// in flight when its context ends (default 30s).
	ShutdownGrace time.Duration
	// SpoolFS replaces the spool's file system (tests inject faults).
	SpoolFS spool.FS
	// Clock drives the rate limits (tests use a fake one); nil is real time.
	Clock policy.Clock
}

// Relay is one configured, listening relay.
type Relay struct {
	cfg     *Config
	log     *slog.Logger
	audit   *auditLog
	spool   *spool.Spool
	server  *smtp.Server
	conns   *policy.ConnLimiter
	allowed policy.Networks
	open    *connSet
	grace   time.Duration
	clock   policy.Clock

	// live is what SIGHUP may swap while sessions run; a transaction reads
	// it once so it sees one consistent set.
	live atomic.Pointer[livePolicy]

	listeners []net.Listener

	ops ops // metrics, health and the audit file (ops.go)

	routes  *router      // every upstream, routes and failover (route.go)
	control net.Listener // queue commands; nil when not configured

	// dataReaders recycles the 32 KiB buffer each message is read through:
	// allocating one per message made a garbage collection every few dozen
	// messages.
	dataReaders sync.Pool
}

// readyBodyFiles is how many empty message files the spool keeps ready:
// enough for a burst to find one while the next batch is made (one
// directory fsync per batch), few enough that a crash leaves few empty
// files to remove.
const readyBodyFiles = 32

// New checks everything that can be checked before serving — the upstream
// secret can be read, the TLS configuration builds, the spool opens, every
// address binds — so a bad setup fails at start with one clear error, not
// at the first message.
func New(cfg *Config, opts Options) (_ *Relay, err error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Relay{
		cfg:   cfg,
		log:   logger,
		audit: newAuditLog(logger),
		conns: policy.NewConnLimiter(cfg.Listen.MaxConnections, cfg.Listen.MaxConnectionsPerClient),
		open:  newConnSet(),
		grace: opts.ShutdownGrace,
	}
	if r.grace <= 0 {
		r.grace = 30 * time.Second
	}
	for _, n := range cfg.Listen.AllowNetworks {
		r.allowed = append(r.allowed, n.Prefix)
	}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	if err := r.initOps(cfg, opts); err != nil {
		return nil, err
	}

	r.clock = opts.Clock
	ctx := opts.Context
	if ctx == nil {
		ctx = context.Background()
	}
	if r.routes, err = newRouter(ctx, cfg, r.log, r.now, r.liveRoutes); err != nil {
		return nil, err
	}
	r.routes.registerMetrics(r.ops.metrics.registry())
	live, err := r.loadPolicy(cfg)
	if err != nil {
		return nil, err
	}
	r.live.Store(live)
	r.spool, err = spool.Open(cfg.Spool.Dir, spool.Options{
		MaxAge:  time.Duration(cfg.Spool.MaxAge),
		Backoff: durations(cfg.Spool.RetryIntervals),
		Workers: cfg.Spool.Workers,
		Events:  r.spoolEvent,
		FS:      opts.SpoolFS,
		// A submission fills a file made ready for it, so its 250
		// waits for one fsync instead of two.
		ReadyFiles: readyBodyFiles,
	})
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", cfg.Spool.Dir, err)
	}

	r.server = smtp.NewServer(smtp.BackendFunc(r.newSession))
	r.server.Domain = cfg.Hostname
	r.server.MaxMessageBytes = int64(cfg.Listen.MaxMessageSize)
	r.server.MaxRecipients = cfg.Listen.MaxRecipients
	r.server.ReadTimeout = time.Duration(cfg.Listen.ReadTimeout)
	r.server.WriteTimeout = time.Duration(cfg.Listen.WriteTimeout)
	r.server.EnableSMTPUTF8 = true
	r.server.ErrorLog = slogPrinter{logger.With(slog.String("component", "smtpd"))}

	// The socket is opened before the TCP listeners, so that a readiness
	// check on the port (systemd, monitoring, tests) also finds
	// `sendmail`'s socket in place; it is listed after them (Addrs, and
	// the demo's instructions, name the TCP address first).
	var socket net.Listener
	if cfg.Listen.Socket != "" {
		// Writable by every local user: any program on the host may
		// submit, and the daemon records who did.
		l, err := listenUnix(cfg.Listen.Socket, "listen.socket", 0o666)
		if err != nil {
			return nil, err
		}
		socket = &guardedListener{Listener: l, limiter: r.conns, audit: r.audit, open: r.open}
	}
	for _, a := range cfg.Listen.Addrs {
		l, err := listenTCP(a)
		if err != nil {
			if socket != nil {
				socket.Close()
			}
			return nil, fmt.Errorf("listen on %s (listen.addrs): %w", a, err)
		}
		r.listeners = append(r.listeners, &guardedListener{Listener: l, allowed: r.allowed, limiter: r.conns, audit: r.audit, open: r.open})
	}
	if socket != nil {
		r.listeners = append(r.listeners, socket)
	}
	if path := cfg.ControlSocketPath(); path != "" {
		if r.control, err = listenControl(path); err != nil {
			return nil, err
		}
	}
	if err := r.listenMetrics(); err != nil {
		return nil, err
	}
	return r, nil
}

// livePolicy is the part of the configuration that changes without a
// restart: keys, rules, limits and how strictly they apply.
type livePolicy struct {
	dkim     *dkimKeys
	rules    policy.SenderRules
	limits   *limits
	limitCfg LimitsConfig
	mode     string // policy.mode
	unsigned string // dkim.unsigned

	cfg *Config // where this set came from, so a reload can log what changed
}

// loadPolicy loads the DKIM keys and builds the rules that depend on them.
func (r *Relay) loadPolicy(cfg *Config) (*livePolicy, error) {
	keys, warnings, err := loadDKIMKeys(cfg.DKIM)
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		r.log.Warn("dkim: " + w)
	}
	return &livePolicy{
		dkim: keys,
		rules: policy.SenderRules{
			AllowedSenders:     cfg.Policy.AllowedSenders,
			AllowedFromDomains: cfg.Policy.AllowedFromDomains,
			SigningDomains:     keys.domains(),
			AllowAnyFrom:       cfg.Policy.AllowAnyFrom,
		},
		limits:   newLimits(cfg.Limits, r.clock),
		limitCfg: cfg.Limits,
		mode:     cfg.Policy.Mode,
		unsigned: cfg.DKIM.Unsigned,
		cfg:      cfg,
	}, nil
}

// Reload applies what can change while running (DKIM keys, sender rules,
// limits, policy mode) from cfg, without dropping sessions. On error the
// old set stays in force. Settings that need a restart are named in the
// log. Rate limit buckets start afresh when the limits change.
func (r *Relay) Reload(cfg *Config) error {
	live, err := r.loadPolicy(cfg)
	if err != nil {
		r.ops.metrics.reloaded(false)
		return err
	}
	old := r.live.Load()
	if cfg.Limits == old.limitCfg {
		live.limits = old.limits // keep the buckets' state
	}
	r.live.Store(live)
	r.ops.metrics.reloaded(true)
	changed := liveChanges(old.cfg, cfg)
	if needRestart := restartOnly(r.cfg, cfg); len(needRestart) > 0 {
		r.log.Warn("configuration reloaded; these changes take effect only after a restart", slog.Any("changed", changed), slog.Any("keys", needRestart))
	} else {
		r.log.Info("configuration reloaded", slog.Any("changed", changed))
	}
	return nil
}

// restartOnly lists the changed settings that a reload cannot apply.
func restartOnly(old, cur *Config) []string {
	var keys []string
	if fmt.Sprint(old.Listen) != fmt.Sprint(cur.Listen) {
		keys = append(keys, "listen")
	}
	if fmt.Sprint(old.Upstream) != fmt.Sprint(cur.Upstream) {
		keys = append(keys, "upstream")
	}
	if fmt.Sprint(old.Upstreams) != fmt.Sprint(cur.Upstreams) {
		keys = append(keys, "upstreams") // routes and rewrite apply on reload
	}
	if fmt.Sprint(old.Spool) != fmt.Sprint(cur.Spool) {
		keys = append(keys, "spool")
	}
	if old.Hostname != cur.Hostname {
		keys = append(keys, "hostname")
	}
	if old.Log != cur.Log {
		keys = append(keys, "log")
	}
	return keys
}

// listenUnix opens a unix socket for the configuration key named key,
// replacing a stale one left by a crash (but never a live one, nor a file
// that is not a socket), with the given mode.
func listenUnix(path, key string, mode os.FileMode) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("%s %s exists and is not a socket: refusing to replace it", key, path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s %s is in use: is another sealpost running?", key, path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("%s: remove stale socket: %w", key, err)
		}
	}
	if _, err := os.Stat(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("%s %s: directory %s: %w (systemd's RuntimeDirectory=sealpost creates it)", key, path, filepath.Dir(path), err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s (%s): %w", path, key, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("%s %s: %w", key, path, err)
	}
	return l, nil
}

// Addrs lists the addresses the relay listens on (useful with port 0).
func (r *Relay) Addrs() []net.Addr {
	out := make([]net.Addr, len(r.listeners))
	for i, l := range r.listeners {
		out[i] = l.Addr()
	}
	return out
}

// Spool exposes the queue, for the queue commands and tests.
func (r *Relay) Spool() *spool.Spool { return r.spool }

// Run serves until ctx ends, then stops accepting, lets sessions finish
// within the grace period (an unfinished DATA is never acknowledged), waits
// for deliveries in flight, and closes the spool.
func (r *Relay) Run(ctx context.Context) error {
	r.log.Info("sealpost relay started", r.cfg.Summary()...)
	r.serveMetrics()
	var wg sync.WaitGroup
	serveErr := make(chan error, len(r.listeners))
	for _, l := range r.listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.server.Serve(l); err != nil && !errors.Is(err, smtp.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				serveErr <- fmt.Errorf("serve %s: %w", l.Addr(), err)
			}
		}()
	}
	deliverCtx, stopDelivery := context.WithCancel(context.WithoutCancel(ctx))
	hardStop, endDeliveries := context.WithCancel(context.Background())
	defer endDeliveries()
	deliveryDone := make(chan error, 1)
	go func() {
		d := &routingDeliverer{rt: r.routes, audit: r.audit, log: r.log, rewrite: r.liveRewrite, hardStop: hardStop}
		deliveryDone <- r.spool.Run(deliverCtx, d)
	}()

	stopQueueHelpers := r.startQueueHelpers()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-serveErr:
	case runErr = <-deliveryDone:
		deliveryDone <- runErr
	}
	r.log.Info("sealpost relay stopping")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), r.grace)
	defer cancel()
	// Shutdown closes only the listeners it has seen Serve register; close
	// them all so a Serve that had not started yet cannot keep accepting.
	shutdownErr := r.server.Shutdown(shutdownCtx)
	for _, l := range r.listeners {
		l.Close()
	}
	if shutdownErr != nil {
		r.log.Warn("sessions still open at the end of the grace period were closed; their unfinished messages were not acknowledged", slog.Any("err", shutdownErr))
		r.open.closeAll()
	}
	wg.Wait()
	// No new delivery attempts; those in flight get what is left of the
	// grace period to finish.
	stopDelivery()
	graceLeft := context.AfterFunc(shutdownCtx, endDeliveries)
	defer graceLeft()
	if err := <-deliveryDone; err != nil && !errors.Is(err, context.Canceled) && runErr == nil {
		runErr = err
	}
	stopQueueHelpers()
	r.routes.close()
	r.stopMetrics(shutdownCtx)
	if err := r.spool.Close(); err != nil && runErr == nil {
		runErr = err
	}
	r.removeSocket()
	r.closeOps()
	return runErr
}

// close releases what New acquired, for a New that fails half way.
func (r *Relay) close() {
	for _, l := range r.listeners {
		l.Close()
	}
	r.removeSocket()
	if r.spool != nil {
		r.spool.Close()
	}
	if r.ops.srv != nil {
		r.ops.srv.ln.Close()
	}
	r.closeOps()
}

func (r *Relay) removeSocket() {
	if r.cfg.Listen.Socket != "" {
		os.Remove(r.cfg.Listen.Socket)
	}
	if r.control != nil {
		r.control.Close()
	}
}

// slogPrinter routes go-smtp's own error log into the operational log.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Printf(format string, v ...any) { p.log.Warn(fmt.Sprintf(format, v...)) }
func (p slogPrinter) Println(v ...any)               { p.log.Warn(fmt.Sprint(v...)) }

func durations(ds []Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = time.Duration(d)
	}
	return out
}
