package relay

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"sealpost/spool"
	"sealpost/upstream"
)

// MetricsConfig is the [metrics] table: the Prometheus and health endpoint.
type MetricsConfig struct {
	// Addr is host:port for /metrics, /healthz and /readyz; "" (the
	// default) serves nothing.
	Addr string `toml:"addr"`
	// AllowNonLoopback must be true for an Addr beyond loopback. The
	// endpoint has no authentication, and its numbers (rule hits, queue
	// age, upstream failures) tell an attacker how the host's mail fares.
	AllowNonLoopback bool `toml:"allow_non_loopback"`
	// ReadyUpstreamWindow is how long the upstream may fail without a
	// success before /readyz says not ready (default 10m; 0: at once).
	ReadyUpstreamWindow Duration `toml:"ready_upstream_window"`
}

func (m *MetricsConfig) validate() error {
	if m.Addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(m.Addr)
	if err != nil {
		return fieldErr("metrics.addr", "%q is not host:port (e.g. \"127.0.0.1:9465\")", m.Addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fieldErr("metrics.addr", "%q: the port must be a number", m.Addr)
	}
	if !m.AllowNonLoopback && !loopbackHost(host) {
		return fieldErr("metrics.addr", "%q is not a loopback address: the endpoint has no authentication; set metrics.allow_non_loopback = true to serve it beyond this host (and restrict the port with a firewall)", m.Addr)
	}
	return nil
}

// loopbackHost reports whether host names this machine only. An empty host
// means every interface, and a name other than localhost may resolve to
// anything.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// metrics holds the relay's Prometheus collectors, in a registry of its own
// so that two relays in one process (tests) never share counters.
//
// Message counters are fed by the audit log (observe): every message event
// is recorded there already, so the numbers and the log cannot disagree.
type metrics struct {
	reg *prometheus.Registry

	events        *prometheus.CounterVec
	rejected      *prometheus.CounterVec
	flagged       *prometheus.CounterVec
	rcpts         *prometheus.CounterVec
	rateLimited   *prometheus.CounterVec
	connFailures  *prometheus.CounterVec
	tlsFailures   *prometheus.CounterVec
	authFailures  *prometheus.CounterVec
	latency       prometheus.Histogram
	transaction   prometheus.Histogram
	lastReached   prometheus.Gauge
	backoffSkips  prometheus.Counter
	reloads       *prometheus.CounterVec
	lastReloadOK  prometheus.Gauge
	upstreamState upstreamHealth

	probeMu sync.Mutex // one /readyz spool probe at a time: they share a name
}

// Label values that exist from the start, so that rate() and absent-series
// alerts work before the first event of a kind.
var (
	knownEvents      = []string{"received", "rejected", "flagged", spool.EventDelivered, spool.EventDeferred, spool.EventFailed, spool.EventExpired, "bounced", spool.EventDeleted}
	knownRcptResults = []string{spool.EventDelivered, spool.EventDeferred, spool.EventFailed, spool.EventExpired}
	knownLimits      = []string{"per-sender", "per-client", "global"}
	knownAuthReasons = []string{authRejected, authMechanism, authOther}
)

const (
	authRejected  = "rejected"
	authMechanism = "mechanism-not-offered"
	authOther     = "other"
)

func newMetrics(r *Relay) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	counterVec := func(name, help string, label string, init []string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label})
		for _, v := range init {
			c.WithLabelValues(v)
		}
		m.reg.MustRegister(c)
		return c
	}
	m.events = counterVec("sealpost_messages_total",
		"Audit events by kind: received (accepted and on disk), rejected, flagged, delivered, deferred, failed, expired, bounced, deleted. One delivery attempt may record several.",
		"event", knownEvents)
	m.rejected = counterVec("sealpost_messages_rejected_total", "Submissions refused, by the rule that refused them.", "rule", nil)
	m.flagged = counterVec("sealpost_messages_flagged_total", "Submissions that broke a rule in policy.mode = \"report\" and were let through, by rule.", "rule", nil)
	m.rcpts = counterVec("sealpost_recipients_total", "Recipients by delivery outcome of each attempt.", "result", knownRcptResults)
	m.rateLimited = counterVec("sealpost_rate_limit_hits_total", "Submissions refused by a rate limit, by limit.", "limit", knownLimits)
	m.connFailures = counterVec("sealpost_upstream_connection_failures_total",
		"Delivery attempts that could not talk to the upstream, by the stage that failed (dial, greeting, ehlo, starttls, tls, mail, rcpt, data, other).",
		"stage", []string{"dial"})
	m.tlsFailures = counterVec("sealpost_upstream_tls_failures_total", "Delivery attempts stopped by a failed TLS check, by check.", "check", []string{upstream.CheckUntrusted})
	m.authFailures = counterVec("sealpost_upstream_auth_failures_total", "Delivery attempts whose AUTH failed, by reason (rejected, mechanism-not-offered, other).", "reason", knownAuthReasons)
	m.reloads = counterVec("sealpost_config_reloads_total", "Configuration reloads (SIGHUP), by result.", "result", []string{"success", "failure"})

	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "sealpost_delivery_latency_seconds",
		Help:    "Time from acceptance (250 to the client) to the upstream's acceptance, queueing and retries included.",
		Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600},
	})
	m.transaction = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "sealpost_upstream_transaction_seconds",
		Help:    "Duration of successful upstream transactions: connect, TLS, AUTH, MAIL/RCPT/DATA.",
		Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
	})
	m.lastReached = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sealpost_upstream_last_success_timestamp_seconds",
		Help: "Unix time the upstream last answered a delivery attempt past AUTH (0: not since start).",
	})
	m.lastReloadOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sealpost_config_last_reload_success_timestamp_seconds",
		Help: "Unix time of the last successful configuration load (start or reload).",
	})
	m.lastReloadOK.SetToCurrentTime()
	m.backoffSkips = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sealpost_upstream_backoff_deferrals_total",
		Help: "Delivery attempts put off without a connection because the upstream is in a backoff pause after a failure (with one upstream, the first such attempt holds back the whole queue, so this counts attempts, not waiting messages).",
	})
	m.reg.MustRegister(m.latency, m.transaction, m.lastReached, m.lastReloadOK, m.backoffSkips)

	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sealpost_sessions_active", Help: "Client connections being served now."},
			func() float64 {
				if r.conns == nil {
					return 0
				}
				return float64(r.conns.Active())
			}),
		&queueCollector{relay: r},
		buildInfo(),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// observe counts one audit event.
func (m *metrics) observe(event string, attrs []slog.Attr) {
	if m == nil {
		return
	}
	m.events.WithLabelValues(event).Inc()
	var rule string
	rcpts := 0
	for _, a := range attrs {
		switch a.Key {
		case "rule":
			rule = a.Value.String()
		case "rcpt":
			if to, ok := a.Value.Any().([]string); ok {
				rcpts = len(to)
			}
		}
	}
	switch event {
	case "rejected":
		m.rejected.WithLabelValues(rule).Inc()
		if limit, ok := strings.CutPrefix(rule, "rate-"); ok {
			m.rateLimited.WithLabelValues(limit).Inc()
		}
	case "flagged":
		m.flagged.WithLabelValues(rule).Inc()
	case spool.EventDelivered, spool.EventDeferred, spool.EventFailed, spool.EventExpired:
		m.rcpts.WithLabelValues(event).Add(float64(rcpts))
	}
}

// upstreamAttempt records the outcome of one delivery attempt: latency on
// success, the failing stage, TLS check or AUTH reason otherwise, and
// whether the upstream was reached (for /readyz). A refusal of MAIL, RCPT
// or DATA with a reply still counts as reached: the connection, TLS and
// AUTH worked.
func (m *metrics) upstreamAttempt(err error, info upstream.DeliveryInfo, received time.Time) {
	if m == nil {
		return
	}
	now := time.Now()
	if err == nil {
		m.transaction.Observe(info.Duration.Seconds())
		if !received.IsZero() {
			m.latency.Observe(now.Sub(received).Seconds())
		}
		m.reached(now)
		return
	}
	if errors.Is(err, context.Canceled) {
		return // shutdown, not the upstream's doing
	}
	if errors.Is(err, upstream.ErrBackoff) {
		// Not an attempt: the pool paused deliveries after a failure that
		// was counted when it happened.
		m.backoffSkips.Inc()
		return
	}
	var tlsErr *upstream.TLSError
	var uerr *upstream.Error
	switch {
	case errors.As(err, &tlsErr):
		m.tlsFailures.WithLabelValues(tlsErr.Check).Inc()
		m.upstreamState.failed(now, "TLS check "+tlsErr.Check+" failed")
	case errors.As(err, &uerr) && uerr.Op == "auth":
		reason := authOther
		switch {
		case errors.Is(err, upstream.ErrAuthRejected):
			reason = authRejected
		case errors.Is(err, upstream.ErrMechanismNotOffered):
			reason = authMechanism
		}
		m.authFailures.WithLabelValues(reason).Inc()
		m.upstreamState.failed(now, "AUTH failed ("+reason+")")
	case uerr != nil && uerr.Code != 0 && (uerr.Op == "mail" || uerr.Op == "rcpt" || uerr.Op == "data"):
		m.reached(now)
	case uerr != nil && knownStage(uerr.Op):
		m.connFailures.WithLabelValues(uerr.Op).Inc()
		m.upstreamState.failed(now, uerr.Op+" failed")
	default:
		m.connFailures.WithLabelValues("other").Inc()
		m.upstreamState.failed(now, "delivery failed")
	}
}

func knownStage(op string) bool {
	switch op {
	case "dial", "greeting", "ehlo", "starttls", "tls", "mail", "rcpt", "data":
		return true
	}
	return false
}

func (m *metrics) reached(now time.Time) {
	m.lastReached.Set(float64(now.UnixNano()) / 1e9)
	m.upstreamState.ok(now)
}

func (m *metrics) reloaded(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.reloads.WithLabelValues("success").Inc()
		m.lastReloadOK.SetToCurrentTime()
		return
	}
	m.reloads.WithLabelValues("failure").Inc()
}

// upstreamHealth remembers how the last delivery attempts went. Readiness
// is judged from real deliveries only: probing the upstream on every
// scrape would log in hundreds of times an hour from every host.
type upstreamHealth struct {
	mu           sync.Mutex
	lastOK       time.Time
	failingSince time.Time // zero while the last attempt reached it
	lastFailure  string    // a stage or check name, never server text
}

func (h *upstreamHealth) ok(now time.Time) {
	h.mu.Lock()
	h.lastOK, h.failingSince, h.lastFailure = now, time.Time{}, ""
	h.mu.Unlock()
}

func (h *upstreamHealth) failed(now time.Time, why string) {
	h.mu.Lock()
	if h.failingSince.IsZero() {
		h.failingSince = now
	}
	h.lastFailure = why
	h.mu.Unlock()
}

// ready is false once the upstream has failed for longer than window
// without a success in between.
func (h *upstreamHealth) ready(now time.Time, window time.Duration) (bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.failingSince.IsZero() && h.lastOK.IsZero():
		return true, "upstream: not tried since start"
	case h.failingSince.IsZero():
		return true, fmt.Sprintf("upstream: reached %s ago", roundSeconds(now.Sub(h.lastOK)))
	case now.Sub(h.failingSince) < window:
		return true, fmt.Sprintf("upstream: failing for %s (%s), within ready_upstream_window %s", roundSeconds(now.Sub(h.failingSince)), h.lastFailure, window)
	default:
		return false, fmt.Sprintf("upstream: not reached for %s: %s", roundSeconds(now.Sub(h.failingSince)), h.lastFailure)
	}
}

func roundSeconds(d time.Duration) time.Duration { return d.Round(time.Second) }

// queueCollector reports the queue's length and the age of its oldest
// message, from the spool's memory: a scrape costs no disk reads, however
// long the queue grows during an outage.
type queueCollector struct {
	relay *Relay // its spool is opened after the collectors are made
}

var (
	queueLenDesc = prometheus.NewDesc("sealpost_queue_messages", "Messages in the active queue (accepted, not yet finished).", nil, nil)
	queueAgeDesc = prometheus.NewDesc("sealpost_queue_oldest_message_age_seconds", "Age of the oldest message in the active queue (0 when empty).", nil, nil)
)

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueLenDesc
	ch <- queueAgeDesc
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	if c.relay.spool == nil {
		return // New failed half way, or a test without a spool
	}
	n, oldest := c.relay.spool.Stats()
	age := 0.0
	if !oldest.IsZero() {
		age = max(time.Since(oldest).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(queueLenDesc, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(queueAgeDesc, prometheus.GaugeValue, age)
}

// buildInfo is sealpost_build_info{version, revision, goversion} = 1.
func buildInfo() prometheus.Collector {
	version, revision, goVersion := "devel", "", ""
	if info, ok := debug.ReadBuildInfo(); ok {
		goVersion = info.GoVersion
		if v := info.Main.Version; v != "" && v != "(devel)" {
			version = v
		}
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "sealpost_build_info",
		Help:        "Always 1; the labels say which build is running.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": goVersion},
	})
	g.Set(1)
	return g
}

// metricsServer serves /metrics, /healthz and /readyz.
type metricsServer struct {
	ln  net.Listener
	srv *http.Server
}

// listenMetrics binds metrics.addr in New, so a port in use fails the start
// like the SMTP listeners do.
func (r *Relay) listenMetrics() error {
	if r.cfg.Metrics.Addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", r.cfg.Metrics.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s (metrics.addr): %w", r.cfg.Metrics.Addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(r.ops.metrics.reg, promhttp.HandlerOpts{
		ErrorLog:            slogPrinter{r.log.With(slog.String("component", "metrics"))},
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", r.serveReady)
	r.ops.srv = &metricsServer{ln: ln, srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(r.log.With(slog.String("component", "metrics")).Handler(), slog.LevelWarn),
	}}
	return nil
}

// MetricsAddr is the address /metrics is served on, or nil.
func (r *Relay) MetricsAddr() net.Addr {
	if r.ops.srv == nil {
		return nil
	}
	return r.ops.srv.ln.Addr()
}

// serveMetrics runs the HTTP server until stopMetrics.
func (r *Relay) serveMetrics() {
	if r.ops.srv == nil {
		return
	}
	go func() {
		if err := r.ops.srv.srv.Serve(r.ops.srv.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.log.Error("metrics server stopped", slog.Any("err", err))
		}
	}()
}

func (r *Relay) stopMetrics(ctx context.Context) {
	if r.ops.srv == nil {
		return
	}
	if err := r.ops.srv.srv.Shutdown(ctx); err != nil {
		r.ops.srv.srv.Close()
	}
	r.ops.srv.ln.Close()
}

// serveReady answers 200 when the relay can take and pass on mail: the
// spool accepts a new file, and the upstream has not failed for longer than
// metrics.ready_upstream_window. The body names each check's state.
func (r *Relay) serveReady(w http.ResponseWriter, _ *http.Request) {
	spoolOK, spoolMsg := r.spoolWritable()
	upOK, upMsg := r.ops.metrics.upstreamState.ready(time.Now(), time.Duration(r.cfg.Metrics.ReadyUpstreamWindow))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if spoolOK && upOK {
		w.WriteHeader(http.StatusOK)
		fmt.Fprintln(w, "ready")
	} else {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready")
	}
	fmt.Fprintln(w, spoolMsg)
	fmt.Fprintln(w, upMsg)
}

// spoolWritable creates and removes a file where the spool writes new
// messages, through the spool's own file system layer. A probe that a crash
// leaves behind is removed by the next spool.Open like any stale temp file.
func (r *Relay) spoolWritable() (bool, string) {
	r.ops.metrics.probeMu.Lock()
	defer r.ops.metrics.probeMu.Unlock()
	name := filepath.Join(r.cfg.Spool.Dir, "tmp", "readyz-probe")
	f, err := r.ops.spoolFS.Create(name)
	if err == nil {
		err = f.Close()
		if rmErr := r.ops.spoolFS.Remove(name); err == nil {
			err = rmErr
		}
	}
	if err != nil {
		// Only the cause: the path is in the configuration already.
		reason := err.Error()
		var pe *fs.PathError
		if errors.As(err, &pe) {
			reason = pe.Err.Error()
		}
		return false, "spool: not writable: " + reason
	}
	return true, "spool: writable"
}
