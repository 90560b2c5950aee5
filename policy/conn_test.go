package policy

import (
	"net/netip"
	"testing"
)

func TestNetworksContains(t *testing.T) {
	t.Parallel()
	nets := Networks{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	for _, tc := range []struct {
		ip   string
		want bool
	}{
		{"127.0.0.1", true},
		{"127.9.9.9", true},
		{"::1", true},
		{"::ffff:127.0.0.1", true},
		{"10.0.0.1", false},
		{"::2", false},
		{"::ffff:10.0.0.1", false},
	} {
		if got := nets.Contains(netip.MustParseAddr(tc.ip)); got != tc.want {
			t.Errorf("Contains(%s) = %v, want %v", tc.ip, got, tc.want)
		}
	}
}

func TestConnLimiter(t *testing.T) {
	t.Parallel()
	l := NewConnLimiter(3, 2)
	a, b := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	steps := []struct {
		ip   netip.Addr
		want ConnDecision
	}{
		{a, ConnAllowed},
		{a, ConnAllowed},
		{a, ConnTooManyFromClient},
		{b, ConnAllowed},
		{b, ConnTooManyTotal},
	}
	for i, s := range steps {
		if got := l.Acquire(s.ip); got != s.want {
			t.Fatalf("step %d: Acquire(%s) = %v, want %v", i, s.ip, got, s.want)
		}
	}
	l.Release(a)
	if got := l.Acquire(b); got != ConnAllowed {
		t.Fatalf("after release: %v, want allowed", got)
	}
	if got := l.Acquire(netip.MustParseAddr("::ffff:127.0.0.2")); got != ConnTooManyTotal {
		t.Fatalf("mapped address: %v", got)
	}
	for _, ip := range []netip.Addr{a, b, b} {
		l.Release(ip)
	}
	if l.Active() != 0 || len(l.perClient) != 0 {
		t.Fatalf("after releasing all: active %d, tracked %d", l.Active(), len(l.perClient))
	}
}
