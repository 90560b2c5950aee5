package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"sealpost/certs/certstest"
	"sealpost/upstream/upstreamtest"
)

func scrapeMetrics(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// seriesValue returns the counter, gauge or histogram count of the series
// of name carrying label=value (or the only series when label is "").
func seriesValue(fams map[string]*dto.MetricFamily, name, label, value string) (float64, bool) {
	for _, m := range fams[name].GetMetric() {
		match := label == ""
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label && lp.GetValue() == value {
				match = true
			}
		}
		if !match {
			continue
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

// waitMetric polls /metrics (bounded) until the series reaches min.
func waitMetric(t *testing.T, addr, name, label, value string, min float64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, _ := seriesValue(scrapeMetrics(t, addr), name, label, value)
		if v >= min {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s{%s=%q} = %v after 30s, want >= %v", name, label, value, v, min)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitMetricAtMost polls /metrics (bounded) until the unlabelled series
// is at most max.
func waitMetricAtMost(t *testing.T, addr, name string, max float64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, ok := seriesValue(scrapeMetrics(t, addr), name, "", "")
		if ok && v <= max {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v (present %v) after 30s, want <= %v", name, v, ok, max)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func httpStatus(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestProductionRun drives the daemon the way production goes: a good
// message, a wrong password, an upstream with an untrusted certificate, a
// refused message. Then it scrapes /metrics with Prometheus' parser, checks
// health and readiness, and reads every line the daemon logged (stderr and
// log.audit_file) for the test secrets and the message body.
func TestProductionRun(t *testing.T) {
	needSwaks(t)
	t.Parallel()
	const (
		bodyToken     = "BODYTOKEN-7f3a9c2e-never-in-a-log"
		wrongPassword = "wrong-Pa55word-e2e-9d1c"
	)
	ca := certstest.NewCA(t)
	good := upstreamtest.New(t, upstreamtest.Options{
		TLS:         upstreamtest.TLSStartTLS,
		Certificate: certstest.Leaf(t, ca, "127.0.0.1"),
		Users:       map[string]string{e2eUser: e2ePassword},
	})
	otherCA := certstest.NewCA(t)
	untrusted := upstreamtest.New(t, upstreamtest.Options{
		TLS:         upstreamtest.TLSStartTLS,
		Certificate: certstest.Leaf(t, otherCA, "127.0.0.1"),
		Users:       map[string]string{e2eUser: e2ePassword},
	})
	proxy := upstreamtest.NewProxy(t)
	proxy.Set(good.Addr())
	setup := newSetup(t, ca.CertPEM())
	listen, metricsAddr := freePort(t), freePort(t)
	auditPath := filepath.Join(setup.dir, "audit.log")
	cfgPath := setup.writeConfig(t, listen, proxy.Addr(), "")
	src, _ := os.ReadFile(cfgPath)
	// A fresh upstream connection per message, so that each change of the
	// upstream shows at the next delivery.
	cfgText := strings.Replace(string(src), "[upstream]\n", "[upstream]\nmax_messages_per_connection = 1\n", 1) +
		"audit_file = \"" + auditPath + "\"\n\n[metrics]\naddr = \"" + metricsAddr + "\"\n"
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startServe(t, cfgPath, listen)

	// 1. A good message.
	swaks(t, listen, "--from", "app@example.com", "--to", "ops@example.net", "--header", "Subject: good", "--body", bodyToken+" one")
	good.Expect(t, 1)

	// 2. The provider no longer takes the password (read again for every
	// connection, so the change shows at once).
	if err := os.WriteFile(setup.pwFile, []byte(wrongPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	swaks(t, listen, "--from", "app@example.com", "--to", "ops@example.net", "--header", "Subject: retried", "--body", bodyToken+" two")
	waitMetric(t, metricsAddr, "sealpost_upstream_auth_failures_total", "reason", "rejected", 1)
	code, body := httpStatus(t, "http://"+metricsAddr+"/readyz")
	if code != 200 || !strings.Contains(body, "within ready_upstream_window") {
		t.Errorf("readyz during a short upstream failure: %d %q", code, body)
	}

	// 3. The right password, but the upstream shows a certificate from a
	// CA sealpost does not trust.
	if err := os.WriteFile(setup.pwFile, []byte(e2ePassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	proxy.Set(untrusted.Addr())
	waitMetric(t, metricsAddr, "sealpost_upstream_tls_failures_total", "check", "certificate-untrusted", 1)

	// 4. The real upstream again: the retried message goes out.
	proxy.Set(good.Addr())
	good.Expect(t, 2)

	// 5. A message the policy refuses.
	out, err := runSwaks("127.0.0.1", strings.Split(listen, ":")[1], "--from", "app@evil.example.org", "--to", "ops@example.net", "--body", bodyToken+" three")
	if err == nil || !strings.Contains(out, "550 5.7.1") {
		t.Errorf("refused message: %v\n%s", err, out)
	}

	// The queue gauges may be up to 5s old (a listing is reused): wait.
	waitMetricAtMost(t, metricsAddr, "sealpost_queue_messages", 0)
	fams := scrapeMetrics(t, metricsAddr)
	for _, tc := range []struct {
		name, label, value string
		min, max           float64
	}{
		{"sealpost_messages_total", "event", "received", 2, 2},
		{"sealpost_messages_total", "event", "delivered", 2, 2},
		{"sealpost_messages_total", "event", "deferred", 2, 1e9},
		{"sealpost_messages_total", "event", "rejected", 1, 1},
		{"sealpost_recipients_total", "result", "delivered", 2, 2},
		{"sealpost_upstream_auth_failures_total", "reason", "rejected", 1, 1e9},
		{"sealpost_upstream_tls_failures_total", "check", "certificate-untrusted", 1, 1e9},
		{"sealpost_delivery_latency_seconds", "", "", 2, 2},
		{"sealpost_build_info", "", "", 1, 1},
	} {
		v, ok := seriesValue(fams, tc.name, tc.label, tc.value)
		if !ok || v < tc.min || v > tc.max {
			t.Errorf("%s{%s=%q} = %v (present %v), want %v..%v", tc.name, tc.label, tc.value, v, ok, tc.min, tc.max)
		}
	}
	if v, ok := seriesValue(fams, "sealpost_messages_rejected_total", "rule", "from-domain-not-allowed"); v != 1 {
		t.Errorf("rejections by from-domain-not-allowed = %v (present %v), want 1", v, ok)
	}
	if code, _ := httpStatus(t, "http://"+metricsAddr+"/healthz"); code != 200 {
		t.Errorf("healthz = %d", code)
	}
	if code, body := httpStatus(t, "http://"+metricsAddr+"/readyz"); code != 200 || !strings.Contains(body, "upstream: reached") {
		t.Errorf("readyz after recovery = %d %q", code, body)
	}
	d.stop(t)

	// Every line logged in the whole run: stderr and the audit file.
	audit, err := os.ReadFile(auditPath)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(auditPath)
	if fi.Mode().Perm()&^0o640 != 0 {
		t.Errorf("audit file mode %v, want at most 0640", fi.Mode().Perm())
	}
	all := d.stderr.String() + string(audit)
	for _, secret := range []string{e2ePassword, wrongPassword, bodyToken} {
		if strings.Contains(all, secret) {
			t.Errorf("the logs contain %q", secret)
		}
	}
	events := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(string(audit)))
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Errorf("audit file line is not JSON: %q", sc.Text())
			continue
		}
		if rec["log"] != "audit" {
			t.Errorf("audit file holds a non-audit record: %q", sc.Text())
		}
		events[rec["event"].(string)]++
	}
	if events["received"] != 2 || events["delivered"] != 2 || events["rejected"] != 1 || events["deferred"] < 2 {
		t.Errorf("audit file events = %v", events)
	}
	if strings.Contains(d.stderr.String(), `"log":"audit"`) {
		t.Errorf("audit records went to stderr too although log.audit_file is set")
	}
}

// TestSIGHUPReload: a changed file applies on SIGHUP and the log names what
// changed; a broken one changes nothing.
func TestSIGHUPReload(t *testing.T) {
	needSwaks(t)
	t.Parallel()
	up, setup := newTLSUpstream(t, upstreamtest.Options{})
	listen := freePort(t)
	cfgPath := setup.writeConfig(t, listen, up.Addr(), "")
	d := startServe(t, cfgPath, listen)
	port := strings.Split(listen, ":")[1]
	accepted := func(from string) bool {
		out, err := runSwaks("127.0.0.1", port, "--from", from, "--to", "ops@example.net")
		return err == nil && queuedAs.MatchString(out)
	}
	if !accepted("app@example.com") || accepted("app@example.org") {
		t.Fatal("before the reload: example.com should be accepted, example.org refused")
	}
	hangup := func(wantLog string, n int) {
		t.Helper()
		if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(15 * time.Second)
		for strings.Count(d.stderr.String(), wantLog) < n {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log 15s after SIGHUP:\n%s", wantLog, d.stderr)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	src, _ := os.ReadFile(cfgPath)
	changed := strings.Replace(string(src), `allowed_from_domains = ["example.com", "*.example.com"]`, `allowed_from_domains = ["example.org"]`, 1)
	if changed == string(src) {
		t.Fatal("the configuration written by writeConfig changed shape; adjust this test")
	}
	os.WriteFile(cfgPath, []byte(changed), 0o644)
	hangup(`"msg":"configuration reloaded"`, 1)
	if !strings.Contains(d.stderr.String(), `"changed":["policy.allowed_from_domains"]`) {
		t.Errorf("the reload record does not name the changed key:\n%s", d.stderr)
	}
	if accepted("app@example.com") || !accepted("app@example.org") {
		t.Error("after the reload: example.org should be accepted, example.com refused")
	}

	// A broken file: refused as a whole, the running configuration stays.
	os.WriteFile(cfgPath, []byte(strings.Replace(changed, `allowed_from_domains = ["example.org"]`, `allowed_from_domains = ["example.com"]`+"\nmode = \"sometimes\"", 1)), 0o644)
	hangup("the new configuration was not applied", 1)
	if !accepted("app@example.org") || accepted("app@example.com") {
		t.Error("after a broken file: the configuration in force changed")
	}
	d.stop(t)
}
