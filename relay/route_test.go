package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"sealpost/internal/fakeclock"

	"github.com/emersion/go-smtp"

	"sealpost/certs/certstest"
	"sealpost/policy"
	"sealpost/spool"
	"sealpost/upstream"
	"sealpost/upstream/upstreamtest"
)

// closedAddr is a loopback address nobody listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// namedUpstream is [upstream]'s settings (CA, credentials) at another
// address.
func namedUpstream(cfg *Config, addr string, failover ...string) UpstreamConfig {
	u := cfg.Upstream
	u.Addr = addr
	u.Failover = failover
	return u
}

func revalidate(t *testing.T, cfg *Config) {
	t.Helper()
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
}

// TestRoutingAndFailover: mail is routed by envelope sender; when the
// routed upstream is down or presents a certificate that does not verify,
// the next one in its failover list carries the message, and the audit
// record names the upstream used.
func TestRoutingAndFailover(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	good := tlsUpstream(t, ca)
	billing := tlsUpstream(t, ca)
	// A certificate from another CA: the TLS check fails.
	badCert := upstreamtest.New(t, upstreamtest.Options{
		TLS:         upstreamtest.TLSStartTLS,
		Certificate: certstest.Leaf(t, certstest.NewCA(t), "127.0.0.1", "localhost"),
		Users:       map[string]string{testUser: testPassword},
	})

	cfg := newTestConfig(t, ca, closedAddr(t)) // [upstream] is down
	cfg.Upstream.Failover = []string{"backup"}
	cfg.Upstreams = map[string]UpstreamConfig{
		"backup":   namedUpstream(cfg, good.Addr()),
		"billing":  namedUpstream(cfg, billing.Addr()),
		"untested": namedUpstream(cfg, badCert.Addr(), "backup"),
	}
	cfg.Routes = []RouteConfig{
		{Sender: "*@billing.example.com", Upstream: "billing"},
		{Sender: "*@new.example.com", Upstream: "untested"},
	}
	revalidate(t, cfg)
	env := startRelay(t, cfg, nil)

	for _, from := range []string{"app@example.com", "invoices@billing.example.com", "app@new.example.com"} {
		body := "From: " + from + "\r\nTo: a@example.org\r\nSubject: routing\r\n\r\nhi\r\n"
		if _, err := send(t, env.addr, from, []string{"a@example.org"}, body); err != nil {
			t.Fatalf("send from %s: %v", from, err)
		}
	}
	recs := env.logs.waitRecord(t, "delivered", 3)
	got := map[string]string{}
	for _, r := range recs {
		got[r["mail_from"].(string)] = r["upstream_name"].(string)
	}
	want := map[string]string{"app@example.com": "backup", "invoices@billing.example.com": "billing", "app@new.example.com": "backup"}
	for from, name := range want {
		if got[from] != name {
			t.Errorf("mail from %s went through %q, want %q (records: %v)", from, got[from], name, got)
		}
	}
	good.Expect(t, 2)
	billing.Expect(t, 1)
	noCommandsAfterConnect(t, badCert)
	if n := len(badCert.Messages()); n != 0 {
		t.Errorf("the upstream with the bad certificate got %d messages", n)
	}
	if !strings.Contains(env.logs.String(), "trying the next in its failover list") {
		t.Errorf("failover not logged:\n%s", env.logs.String())
	}
}

// TestRewriteFromBeforeSigning: with header_from = "always" the delivered
// message carries the account as From (display name kept), the original
// in Reply-To and X-Original-From, and a DKIM signature that verifies.
func TestRewriteFromBeforeSigning(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	up := tlsUpstream(t, ca)
	cfg := newTestConfig(t, ca, up.Addr())
	k := newTestKeys(t)
	setup := keySetups(t, k)[0] // rsa2048 for example.com, the account's domain
	cfg.DKIM = setup.cfg
	cfg.DKIM.Unsigned = "reject"
	cfg.Rewrite.HeaderFrom = RewriteAlways
	cfg.Rewrite.EnvelopeFrom = "account"
	revalidate(t, cfg)
	env := startRelay(t, cfg, nil)

	const from = "billing@apps.example.com"
	body := "From: \"Billing Robot\" <" + from + ">\r\nTo: a@example.org\r\nSubject: invoice\r\n\r\nhello\r\n"
	if _, err := send(t, env.addr, from, []string{"a@example.org"}, body); err != nil {
		t.Fatal(err)
	}
	msg := up.Expect(t, 1)[0]
	if msg.From != testUser {
		t.Errorf("MAIL FROM = %q, want the account %q", msg.From, testUser)
	}
	data := string(msg.Data)
	for _, want := range []string{
		"From: \"Billing Robot\" <" + testUser + ">\r\n",
		"Reply-To: \"Billing Robot\" <" + from + ">\r\n",
		"X-Original-From: \"Billing Robot\" <" + from + ">\r\n",
	} {
		if !strings.Contains(data, want) {
			t.Errorf("delivered message lacks %q:\n%s", want, data)
		}
	}
	for i, err := range verifyGo(t, msg.Data, setup.records) {
		if err != nil {
			t.Errorf("DKIM signature %d does not verify: %v", i, err)
		}
	}
	// The queued envelope kept the original sender: a bounce reaches it.
	rec := env.logs.waitRecord(t, "delivered", 1)[0]
	if rec["mail_from"] != from {
		t.Errorf("audit mail_from = %v, want the original %s", rec["mail_from"], from)
	}
}

func TestRewriteFromModes(t *testing.T) {
	t.Parallel()
	const account = "relay@example.com"
	tests := []struct {
		name, mode, from string
		allowed          []string
		replyTo          string
		wantFrom         string
		wantReplyTo      string
	}{
		{"never", RewriteNever, "A <a@example.org>", nil, "", "A <a@example.org>", ""},
		{"always", RewriteAlways, "A <a@example.org>", nil, "", `"A" <relay@example.com>`, "A <a@example.org>"},
		{"keeps reply-to", RewriteAlways, "A <a@example.org>", nil, "r@example.org", `"A" <relay@example.com>`, "r@example.org"},
		{"allowed", RewriteIfNotAllowed, "A <a@example.org>", []string{"*@example.org"}, "", "A <a@example.org>", ""},
		{"account itself", RewriteIfNotAllowed, "Me <RELAY@example.com>", nil, "", "Me <RELAY@example.com>", ""},
		{"not allowed", RewriteIfNotAllowed, "a@example.org", nil, "", "<relay@example.com>", "a@example.org"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var h policy.Header
			h.Add("From", tt.from)
			if tt.replyTo != "" {
				h.Add("Reply-To", tt.replyTo)
			}
			if tt.mode != RewriteNever {
				rewriteFrom(&h, RewriteConfig{HeaderFrom: tt.mode, AllowedFrom: tt.allowed}, account)
			}
			if got, _ := h.Get("From"); got != tt.wantFrom {
				t.Errorf("From = %q, want %q", got, tt.wantFrom)
			}
			if got, _ := h.Get("Reply-To"); got != tt.wantReplyTo {
				t.Errorf("Reply-To = %q, want %q", got, tt.wantReplyTo)
			}
		})
	}
}

// TestPacingUnderABurst: a burst of mail routed to an upstream with rate
// "30/m" goes out one message per 2s of (fake) time, however many wait;
// meanwhile mail for another upstream is not held back.
func TestPacingUnderABurst(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	slowUp, fastUp := tlsUpstream(t, ca), tlsUpstream(t, ca)
	cfg := newTestConfig(t, ca, fastUp.Addr())
	slow := namedUpstream(cfg, slowUp.Addr())
	slow.Rate = Rate{Events: 30, Per: time.Minute}
	cfg.Upstreams = map[string]UpstreamConfig{"slow": slow}
	cfg.Routes = []RouteConfig{{Sender: "*@bulk.example.com", Upstream: "slow"}}
	revalidate(t, cfg)

	clock := fakeclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	d, sp := routedSpool(t, cfg, clock, 4)
	const burst = 8
	for range burst {
		putMsg(t, sp, "news@bulk.example.com")
	}
	runDeliveries(t, sp, d)

	for i := 1; i <= burst; i++ {
		slowUp.Expect(t, i)
		if i == 2 {
			// Mail for the unpaced upstream flows while "slow" waits.
			for range 3 {
				putMsg(t, sp, "app@example.com")
			}
			fastUp.Expect(t, 3)
		}
		// Without time passing nothing more goes out, however often the
		// queue is kicked.
		for range 10 {
			sp.Kick()
			time.Sleep(time.Millisecond)
		}
		if n := len(slowUp.Messages()); n != i {
			t.Fatalf("%d messages out after %v of fake time, want %d (one per 2s)", n, time.Duration(i-1)*2*time.Second, i)
		}
		clock.Advance(2 * time.Second)
		sp.Kick()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		left, err := sp.List()
		if err != nil {
			t.Fatal(err)
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages still queued", len(left))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// routedSpool builds cfg's router and its spool Deliverer, and a spool with
// workers on clock (one retry interval, an hour): the delivery loop
// without the SMTP side.
func routedSpool(t *testing.T, cfg *Config, clock *fakeclock.Clock, workers int) (*routingDeliverer, *spool.Spool) {
	t.Helper()
	log := NewLogger(&syncBuffer{}, cfg.Log)
	rt, err := newRouter(context.Background(), cfg, log, clock.Now, func() []RouteConfig { return cfg.Routes })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rt.close)
	sp, err := spool.Open(t.TempDir(), spool.Options{Workers: workers, Now: clock.Now, Backoff: []time.Duration{time.Hour}, MaxAge: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// Also when the test ends before runDeliveries (Close is idempotent).
	t.Cleanup(func() { sp.Close() })
	return &routingDeliverer{rt: rt, audit: newAuditLog(log), log: log, hardStop: context.Background()}, sp
}

// runDeliveries runs sp's delivery loop with d until the test ends.
func runDeliveries(t *testing.T, sp *spool.Spool, d spool.Deliverer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sp.Run(ctx, d) }()
	t.Cleanup(func() {
		cancel()
		<-done
		sp.Close()
	})
}

func putMsg(t *testing.T, sp *spool.Spool, from string) {
	t.Helper()
	body := "From: " + from + "\r\nTo: a@example.org\r\nSubject: x\r\n\r\nhi\r\n"
	if _, err := sp.Put(context.Background(), spool.Envelope{From: from, To: []string{"a@example.org"}}, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
}

func TestPacer(t *testing.T) {
	t.Parallel()
	p := &pacer{interval: 2 * time.Second}
	t0 := time.Unix(1e9, 0)
	if ok, _ := p.take(t0); !ok {
		t.Fatal("first take refused")
	}
	if ok, at := p.take(t0.Add(time.Second)); ok || !at.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("second take within the interval = %v, %v", ok, at)
	}
	if ok, _ := p.take(t0.Add(2 * time.Second)); !ok {
		t.Fatal("take after the interval refused")
	}
	// An idle upstream does not bank tokens for a burst later.
	if ok, _ := p.take(t0.Add(time.Hour)); !ok {
		t.Fatal("take after idling refused")
	}
	if ok, _ := p.take(t0.Add(time.Hour + time.Second)); ok {
		t.Fatal("idle time was banked as a burst")
	}
}

func TestUnreachableClassification(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{&upstream.Error{Op: "dial", Err: errors.New("refused")}, true},
		{&upstream.Error{Op: "tls", Err: &upstream.TLSError{Check: upstream.CheckUntrusted}}, true},
		{&upstream.BackoffError{Until: time.Now()}, true},
		{&upstream.Error{Op: "auth", Code: 535}, false},
		{&upstream.Error{Op: "mail", Code: 550}, false},
		{&upstream.Error{Op: "data", Err: errors.New("reset")}, false},
	} {
		if got := unreachable(tt.err); got != tt.want {
			t.Errorf("unreachable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestPartialDeliveryNamesTheRoutedUpstream: one attempt that delivers to
// one recipient and defers another records both against the upstream it
// used, not the default one.
func TestPartialDeliveryNamesTheRoutedUpstream(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	billing := upstreamtest.New(t, upstreamtest.Options{
		TLS:         upstreamtest.TLSStartTLS,
		Certificate: certstest.Leaf(t, ca, "127.0.0.1", "localhost"),
		Users:       map[string]string{testUser: testPassword},
		RcptReply: func(addr string) *smtp.SMTPError {
			if addr == "later@example.org" {
				return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "mailbox busy"}
			}
			return nil
		},
	})
	cfg := newTestConfig(t, ca, closedAddr(t))
	cfg.Upstreams = map[string]UpstreamConfig{"billing": namedUpstream(cfg, billing.Addr())}
	cfg.Routes = []RouteConfig{{Sender: "*@billing.example.com", Upstream: "billing"}}
	revalidate(t, cfg)
	env := startRelay(t, cfg, nil)
	from := "invoices@billing.example.com"
	body := "From: " + from + "\r\nTo: now@example.org, later@example.org\r\nSubject: partial\r\n\r\nhi\r\n"
	if _, err := send(t, env.addr, from, []string{"now@example.org", "later@example.org"}, body); err != nil {
		t.Fatal(err)
	}
	for _, event := range []string{"delivered", "deferred"} {
		rec := env.logs.waitRecord(t, event, 1)[0]
		if rec["upstream_name"] != "billing" || rec["upstream"] != billing.Addr() {
			t.Errorf("%s record names %v at %v, want billing at %s", event, rec["upstream_name"], rec["upstream"], billing.Addr())
		}
	}
}

// TestRouteMemoryFollowsAttempts: the relay remembers which upstream a
// message's attempt went to only until that attempt's records are written,
// so an outage with a growing queue does not grow that memory.
func TestRouteMemoryFollowsAttempts(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	cfg := newTestConfig(t, ca, closedAddr(t))
	env := startRelay(t, cfg, nil)
	const n = 5
	for i := range n {
		body := fmt.Sprintf("From: app@example.com\r\nTo: rcpt@example.org\r\nSubject: outage %d\r\n\r\nhi\r\n", i)
		if _, err := send(t, env.addr, "app@example.com", []string{"rcpt@example.org"}, body); err != nil {
			t.Fatal(err)
		}
	}
	env.logs.waitRecord(t, "deferred", 1)
	entries := func() int {
		k := 0
		env.relay.routes.lastUsed.Range(func(any, any) bool { k++; return true })
		return k
	}
	deadline := time.Now().Add(10 * time.Second)
	for entries() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if k := entries(); k != 0 {
		t.Errorf("%d messages still remembered with %d queued and the upstream down, want 0", k, n)
	}
	if q, _ := env.relay.spool.Stats(); q != n {
		t.Errorf("%d queued, want %d", q, n)
	}
}

// countingDeliverer counts the attempts the spool hands to the router.
type countingDeliverer struct {
	spool.Deliverer
	calls atomic.Int64
}

func (c *countingDeliverer) Deliver(ctx context.Context, id spool.ID, env spool.Envelope, to []string, body io.Reader) ([]error, error) {
	c.calls.Add(1)
	return c.Deliverer.Deliver(ctx, id, env, to, body)
}

// TestOnlyUpstreamPauseHoldsTheQueue: with a single upstream, its backoff
// holds back the whole queue at once. Were the pause keyed, every message
// would still be read and handed to the router once, to learn the
// upstream is paused: after a restart with the upstream down, the whole
// queue, competing with `queue list` and the loading of the queue.
func TestOnlyUpstreamPauseHoldsTheQueue(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	cfg := newTestConfig(t, ca, closedAddr(t))
	clock := fakeclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	const workers, queued = 4, 40
	routing, sp := routedSpool(t, cfg, clock, workers)
	for range queued {
		putMsg(t, sp, "app@example.com")
	}
	d := &countingDeliverer{Deliverer: routing}
	runDeliveries(t, sp, d)

	// Wait until the attempts stop: fake time stands still, so the
	// backoff does not end.
	last, stable := int64(-1), 0
	for i := 0; i < 1000 && stable < 20; i++ {
		sp.Kick()
		time.Sleep(5 * time.Millisecond)
		if n := d.calls.Load(); n == last {
			stable++
		} else {
			last, stable = n, 0
		}
	}
	// Each worker may have taken one message before the first refused
	// dial paused the upstream, and one more before it learned of it.
	if n := d.calls.Load(); n == 0 || n > 2*workers {
		t.Errorf("the router was asked %d times for %d queued messages, want 1..%d: the pause of the only upstream must hold back the queue", n, queued, 2*workers)
	}
	if q, _ := sp.Stats(); q != queued {
		t.Errorf("%d queued, want %d", q, queued)
	}
}
