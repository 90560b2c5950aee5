package relay

import (
	"strings"
	"testing"

	"sealpost/certs"
	"sealpost/certs/certstest"
)

// TestUpstreamPins: with pins set, a correctly verified upstream whose key
// is not pinned gets no AUTH and no mail, and the log names the pin check;
// with its CA's key pinned it is delivered to.
func TestUpstreamPins(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	other := certstest.NewCA(t)
	for _, tc := range []struct {
		name      string
		pin       string
		delivered bool
	}{
		{"pinned CA key", certs.Pin(ca.Certificate()), true},
		{"another key", certs.Pin(other.Certificate()), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := tlsUpstream(t, ca)
			cfg := newTestConfig(t, ca, up.Addr())
			cfg.Upstream.Pins = []string{tc.pin}
			env := startRelay(t, cfg, nil)
			if _, err := send(t, env.addr, "app@example.com", []string{"ops@example.net"}, testBody); err != nil {
				t.Fatal(err)
			}
			if tc.delivered {
				up.Expect(t, 1)
				return
			}
			deferred := env.logs.waitRecord(t, "deferred", 1)
			if msg, _ := deferred[0]["error"].(string); !strings.Contains(msg, "certificate-pin") {
				t.Errorf("deferred error %q does not name the pin check", msg)
			}
			noCommandsAfterConnect(t, up)
			env.stop()
			assertQueueLen(t, cfg, 1)
		})
	}
}

func TestCheckReportsPins(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	for _, tc := range []struct {
		pins []string
		want Status
	}{
		{[]string{certs.Pin(ca.Certificate())}, StatusWarn},
		{[]string{certs.Pin(ca.Certificate()), certs.Pin(certstest.NewCA(t).Certificate())}, StatusPass},
		{[]string{"sha256/short"}, StatusFail},
	} {
		c := &checker{}
		c.checkPins(tc.pins)
		if len(c.out) != 1 || c.out[0].Status != tc.want {
			t.Errorf("pins %v: %+v, want %s", tc.pins, c.out, tc.want)
		}
	}
}
