package relay

import (
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"sealpost/certs/certstest"
	"sealpost/spool"
	"sealpost/upstream"
	"sealpost/upstream/upstreamtest"
)

// scrape fetches and parses the relay's /metrics with Prometheus' own
// text parser.
func scrape(t *testing.T, r *Relay) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + r.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return families
}

// metricValue is the value of the series of name whose labels include
// labels (name=value pairs); ok is false when there is none.
func metricValue(families map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := families[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func getURL(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestMetricsAfterTraffic(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	up := tlsUpstream(t, ca)
	cfg := newTestConfig(t, ca, up.Addr())
	cfg.Metrics.Addr = "127.0.0.1:0"
	// Two messages per sender per hour: the third is a rate-limit hit.
	cfg.Limits.PerSender = RateLimit{Rate: Rate{Events: 2, Per: time.Hour}, Burst: 2}
	env := startRelay(t, cfg, nil)

	if _, err := send(t, env.addr, "app@example.com", []string{"ops@example.net", "dev@example.net"}, testBody); err != nil {
		t.Fatalf("good message: %v", err)
	}
	env.logs.waitRecord(t, "delivered", 1)
	spoofed := strings.Replace(testBody, "From: app@example.com", "From: ceo@bank.example.org", 1)
	if _, err := send(t, env.addr, "app@example.com", []string{"ops@example.net"}, spoofed); err == nil {
		t.Fatal("message with a foreign From domain accepted")
	}
	if _, err := send(t, env.addr, "app@example.com", []string{"ops@example.net"}, testBody); err == nil {
		t.Fatal("third message within the sender's limit accepted")
	}

	// The "delivered" record is written during the attempt; the queue
	// gauge counts the message until the spool has finished with it.
	deadline := time.Now().Add(10 * time.Second)
	for n, _ := env.relay.spool.Stats(); n != 0; n, _ = env.relay.spool.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("%d messages still queued 10s after the delivery", n)
		}
		time.Sleep(5 * time.Millisecond)
	}

	families := scrape(t, env.relay)
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"sealpost_messages_total", []string{"event", "received"}, 1},
		{"sealpost_messages_total", []string{"event", "delivered"}, 1},
		{"sealpost_messages_total", []string{"event", "rejected"}, 2},
		{"sealpost_messages_total", []string{"event", "deferred"}, 0},
		{"sealpost_messages_total", []string{"event", "bounced"}, 0},
		{"sealpost_messages_rejected_total", []string{"rule", "from-domain-not-allowed"}, 1},
		{"sealpost_messages_rejected_total", []string{"rule", "rate-per-sender"}, 1},
		{"sealpost_rate_limit_hits_total", []string{"limit", "per-sender"}, 1},
		{"sealpost_rate_limit_hits_total", []string{"limit", "per-client"}, 0},
		{"sealpost_recipients_total", []string{"result", "delivered"}, 2},
		{"sealpost_delivery_latency_seconds", nil, 1},
		{"sealpost_upstream_transaction_seconds", nil, 1},
		{"sealpost_upstream_tls_failures_total", []string{"check", "certificate-untrusted"}, 0},
		{"sealpost_upstream_auth_failures_total", []string{"reason", "rejected"}, 0},
		{"sealpost_queue_messages", nil, 0},
		{"sealpost_queue_oldest_message_age_seconds", nil, 0},
		{"sealpost_build_info", []string{"goversion", runtime.Version()}, 1},
		{"sealpost_config_reloads_total", []string{"result", "failure"}, 0},
	} {
		got, ok := metricValue(families, tc.name, tc.labels...)
		if !ok || got != tc.want {
			t.Errorf("%s%v = %v (present: %v), want %v", tc.name, tc.labels, got, ok, tc.want)
		}
	}
	if v, ok := metricValue(families, "sealpost_upstream_last_success_timestamp_seconds"); !ok || v < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last success timestamp = %v, %v", v, ok)
	}
	for _, name := range []string{"sealpost_sessions_active", "go_goroutines"} {
		if _, ok := metricValue(families, name); !ok {
			t.Errorf("%s missing", name)
		}
	}
}

// logRecords decodes every JSON record in the log.
func logRecords(b *syncBuffer) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(b.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil {
			out = append(out, rec)
		}
	}
	return out
}

// toggleFS fails file creation in the spool's tmp/ while broken is set,
// as a full or read-only disk would.
type toggleFS struct {
	spool.FS
	broken atomic.Bool
}

func (f *toggleFS) Create(name string) (spool.File, error) {
	if f.broken.Load() && strings.Contains(name, string(filepath.Separator)+"tmp"+string(filepath.Separator)) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: syscall.EROFS}
	}
	return f.FS.Create(name)
}

func TestReadinessFlips(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	up := tlsUpstream(t, ca)
	proxy := upstreamtest.NewProxy(t)
	proxy.Set(up.Addr())
	cfg := newTestConfig(t, ca, proxy.Addr())
	cfg.Metrics.Addr = "127.0.0.1:0"
	cfg.Metrics.ReadyUpstreamWindow = 0 // any failure without a success since makes it not ready
	logs := &syncBuffer{}
	fsys := &toggleFS{FS: spool.OSFS()}
	r, err := New(cfg, Options{Logger: NewLogger(logs, cfg.Log), SpoolFS: fsys, ShutdownGrace: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	env := runRelay(t, r, cfg, logs)
	base := "http://" + r.MetricsAddr().String()
	expect := func(step, path string, wantCode int, wantText string) {
		t.Helper()
		code, body := getURL(t, base+path)
		if code != wantCode || !strings.Contains(body, wantText) {
			t.Errorf("%s: %s = %d %q, want %d and %q", step, path, code, body, wantCode, wantText)
		}
	}

	expect("at start", "/readyz", 200, "upstream: not tried since start")
	if _, err := send(t, env.addr, "app@example.com", []string{"ops@example.net"}, testBody); err != nil {
		t.Fatal(err)
	}
	logs.waitRecord(t, "delivered", 1)
	expect("after a delivery", "/readyz", 200, "upstream: reached")

	fsys.broken.Store(true)
	expect("spool unwritable", "/readyz", 503, "spool: not writable: read-only file system")
	expect("spool unwritable", "/healthz", 200, "ok")
	fsys.broken.Store(false)
	expect("spool writable again", "/readyz", 200, "spool: writable")

	// The upstream goes away, with the connection the relay may be
	// keeping open to it.
	proxy.Set("")
	up.Close()
	if _, err := send(t, env.addr, "app@example.com", []string{"ops@example.net"}, testBody); err != nil {
		t.Fatal(err)
	}
	logs.waitRecord(t, "deferred", 1)
	expect("upstream gone", "/readyz", 503, "upstream: not reached")
	expect("upstream gone", "/healthz", 200, "ok")

	up = tlsUpstream(t, ca)
	proxy.Set(up.Addr())
	r.routes.retryNow() // what `queue flush` does
	r.Spool().Flush()
	logs.waitRecord(t, "delivered", 2)
	expect("upstream back", "/readyz", 200, "upstream: reached")
}

func TestUpstreamAttemptClassification(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err          error
		metric, l, v string
		reached      bool
	}{
		{&upstream.Error{Op: "tls", Err: &upstream.TLSError{Check: upstream.CheckHostname}}, "sealpost_upstream_tls_failures_total", "check", "certificate-hostname", false},
		{&upstream.Error{Op: "starttls", Err: &upstream.TLSError{Check: upstream.CheckStartTLSNotOffered}}, "sealpost_upstream_tls_failures_total", "check", "starttls-not-offered", false},
		{&upstream.Error{Op: "auth", Code: 535, Err: upstream.ErrAuthRejected}, "sealpost_upstream_auth_failures_total", "reason", "rejected", false},
		{&upstream.Error{Op: "auth", Err: upstream.ErrMechanismNotOffered}, "sealpost_upstream_auth_failures_total", "reason", "mechanism-not-offered", false},
		{&upstream.Error{Op: "dial", Err: syscall.ECONNREFUSED}, "sealpost_upstream_connection_failures_total", "stage", "dial", false},
		{&upstream.Error{Op: "greeting", Code: 554}, "sealpost_upstream_connection_failures_total", "stage", "greeting", false},
		{errors.New("something else"), "sealpost_upstream_connection_failures_total", "stage", "other", false},
		{&upstream.Error{Op: "rcpt", Code: 550, Message: "no such user"}, "", "", "", true},
		// A pause after a counted failure is not another failure.
		{&upstream.BackoffError{Last: &upstream.Error{Op: "tls", Err: &upstream.TLSError{Check: upstream.CheckUntrusted}}}, "sealpost_upstream_backoff_deferrals_total", "", "", true},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			t.Parallel()
			r := &Relay{}
			m := newMetrics(r)
			m.upstreamAttempt(tc.err, upstream.DeliveryInfo{}, time.Now())
			ok, _ := m.upstreamState.ready(time.Now(), 0)
			if v, _ := metricValue(gather(t, m), "sealpost_upstream_tls_failures_total", "check", "certificate-untrusted"); errors.Is(tc.err, upstream.ErrBackoff) && v != 0 {
				t.Errorf("a backoff pause counted as a TLS failure")
			}
			if ok != tc.reached {
				t.Errorf("ready = %v, want %v", ok, tc.reached)
			}
			if tc.metric == "" {
				return
			}
			byName := gather(t, m)
			var labels []string
			if tc.l != "" {
				labels = []string{tc.l, tc.v}
			}
			if v, ok := metricValue(byName, tc.metric, labels...); !ok || v != 1 {
				t.Errorf("%s{%s=%q} = %v, %v; want 1", tc.metric, tc.l, tc.v, v, ok)
			}
		})
	}
}

func TestUpstreamHealthWindow(t *testing.T) {
	t.Parallel()
	var h upstreamHealth
	t0 := time.Unix(1_800_000_000, 0)
	h.ok(t0)
	h.failed(t0.Add(time.Minute), "dial failed")
	h.failed(t0.Add(5*time.Minute), "dial failed")
	if ok, why := h.ready(t0.Add(8*time.Minute), 10*time.Minute); !ok {
		t.Errorf("failing for 7m within a 10m window: not ready (%s)", why)
	}
	if ok, why := h.ready(t0.Add(12*time.Minute), 10*time.Minute); ok || !strings.Contains(why, "not reached for 11m0s: dial failed") {
		t.Errorf("failing for 11m with a 10m window: ready=%v %q", ok, why)
	}
	h.ok(t0.Add(13 * time.Minute))
	if ok, _ := h.ready(t0.Add(14*time.Minute), 0); !ok {
		t.Error("not ready after a success")
	}
}

func TestMetricsOffByDefault(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	cfg := newTestConfig(t, ca, "127.0.0.1:1")
	env := startRelay(t, cfg, nil)
	if env.relay.MetricsAddr() != nil {
		t.Errorf("metrics served on %v without metrics.addr", env.relay.MetricsAddr())
	}
}

func TestMetricsConfigValidation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		addr    string
		allow   bool
		wantErr string
	}{
		{"", false, ""},
		{"127.0.0.1:9465", false, ""},
		{"[::1]:9465", false, ""},
		{"localhost:9465", false, ""},
		{"0.0.0.0:9465", false, "not a loopback address"},
		{":9465", false, "not a loopback address"},
		{"metrics.example.com:9465", false, "not a loopback address"},
		{"0.0.0.0:9465", true, ""},
		{"127.0.0.1", false, "not host:port"},
		{"127.0.0.1:http", false, "port must be a number"},
	} {
		m := MetricsConfig{Addr: tc.addr, AllowNonLoopback: tc.allow}
		err := m.validate()
		if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("validate(%q, allow=%v) = %v, want %q", tc.addr, tc.allow, err, tc.wantErr)
		}
	}
}

func TestAuditFileAndReopen(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	up := tlsUpstream(t, ca)
	cfg := newTestConfig(t, ca, up.Addr())
	dir := t.TempDir()
	cfg.Log.AuditFile = filepath.Join(dir, "audit.log")
	env := startRelay(t, cfg, nil)
	if _, err := send(t, env.addr, "app@example.com", []string{"ops@example.net"}, testBody); err != nil {
		t.Fatal(err)
	}
	waitFileRecord(t, cfg.Log.AuditFile, "delivered")
	if strings.Contains(env.logs.String(), `"log":"audit"`) {
		t.Errorf("audit records also went to stderr with log.audit_file set:\n%s", env.logs)
	}
	fi, err := os.Stat(cfg.Log.AuditFile)
	if err != nil || fi.Mode().Perm()&^0o640 != 0 {
		t.Errorf("audit file mode: %v %v, want at most 0640", fi.Mode(), err)
	}

	// logrotate: move the file away, then SIGHUP (Hangup). The reload of a
	// missing configuration file fails, but the reopen happens regardless.
	rotated := cfg.Log.AuditFile + ".1"
	if err := os.Rename(cfg.Log.AuditFile, rotated); err != nil {
		t.Fatal(err)
	}
	if err := env.relay.Hangup(filepath.Join(dir, "missing.toml")); err == nil {
		t.Error("Hangup with a missing configuration returned nil")
	}
	if _, err := send(t, env.addr, "app@example.com", []string{"ops@example.net"}, testBody); err != nil {
		t.Fatal(err)
	}
	waitFileRecord(t, cfg.Log.AuditFile, "delivered")
	old, _ := os.ReadFile(rotated)
	if n := strings.Count(string(old), `"event":"received"`); n != 1 {
		t.Errorf("rotated file holds %d received records, want 1", n)
	}
}

// waitFileRecord waits (bounded) for a record of event in the file.
func waitFileRecord(t *testing.T, path, event string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), `"event":"`+event+`"`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q record in %s after 15s:\n%s", event, path, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestReloadLogsChangesAndRefusesBrokenConfig(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	up := tlsUpstream(t, ca)
	cfg := newTestConfig(t, ca, up.Addr())
	cfg.Metrics.Addr = "127.0.0.1:0"
	env := startRelay(t, cfg, nil)

	next := *cfg
	next.Policy.AllowedFromDomains = []string{"example.org"}
	next.Limits.PerClient = RateLimit{Rate: Rate{Events: 10, Per: time.Minute}, Burst: 5}
	if err := env.relay.Reload(&next); err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	for _, r := range logRecords(env.logs) {
		if r["msg"] == "configuration reloaded" {
			rec = r
		}
	}
	changed, _ := rec["changed"].([]any)
	if !slices.Contains(changed, any("policy.allowed_from_domains")) || !slices.Contains(changed, any("limits.per_client")) || len(changed) != 2 {
		t.Errorf("reload record = %v, want changed = [policy.allowed_from_domains limits.per_client]", rec)
	}
	if _, err := send(t, env.addr, "app@example.com", []string{"ops@example.net"}, testBody); err == nil {
		t.Error("a From domain removed by the reload is still accepted")
	}

	// A broken file: nothing of it applies.
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("[upstream]\naddr = \"smtp.example.com:587\"\n[policy]\nallowed_from_domains = [\"example.com\"]\nmode = \"sometimes\"\n"), 0o600)
	if err := env.relay.Hangup(bad); err == nil || !strings.Contains(err.Error(), "policy.mode") {
		t.Errorf("Hangup(broken file) = %v, want a policy.mode error", err)
	}
	if _, err := send(t, env.addr, "app@example.org", []string{"ops@example.net"}, strings.Replace(testBody, "app@example.com", "app@example.org", 1)); err != nil {
		t.Errorf("the configuration in force before the broken file no longer applies: %v", err)
	}
	families := scrape(t, env.relay)
	for result, want := range map[string]float64{"success": 1, "failure": 1} {
		if v, _ := metricValue(families, "sealpost_config_reloads_total", "result", result); v != want {
			t.Errorf("reloads{result=%q} = %v, want %v", result, v, want)
		}
	}
}

func TestLiveChanges(t *testing.T) {
	t.Parallel()
	a := Defaults()
	a.DKIM.Keys = []DKIMKey{{Domain: "example.com", Selector: "s1", KeyFile: "/k1"}}
	b := *a
	b.DKIM.Keys = []DKIMKey{{Domain: "example.com", Selector: "s2", KeyFile: "/k2"}}
	b.Policy.Mode = "report"
	got := liveChanges(a, &b)
	want := []string{"dkim.keys +example.com/s2", "dkim.keys -example.com/s1", "policy.mode"}
	if !slices.Equal(got, want) {
		t.Errorf("liveChanges = %q, want %q", got, want)
	}
	c := *a
	c.DKIM.Keys = []DKIMKey{{Domain: "example.com", Selector: "s1", KeyFile: "/k1-new"}}
	if got := liveChanges(a, &c); !slices.Equal(got, []string{"dkim.keys"}) {
		t.Errorf("key file moved: %q", got)
	}
	if got := liveChanges(a, a); len(got) != 0 {
		t.Errorf("no change: %q", got)
	}
}

func gather(t *testing.T, m *metrics) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		byName[f.GetName()] = f
	}
	return byName
}
