package policy

import (
	"net/netip"
	"sync"
)

// Networks is the set of client networks allowed to connect.
type Networks []netip.Prefix

// Contains reports whether ip lies in one of the networks. IPv4 addresses
// that arrive mapped into IPv6 (::ffff:127.0.0.1 on a dual-stack socket)
// are compared as IPv4, so an IPv4 allow-list still matches them.
func (n Networks) Contains(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range n {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// ConnLimiter caps connections in total and per client address. Its memory
// is bounded by the total cap: an address is only tracked while it holds a
// connection.
type ConnLimiter struct {
	maxTotal, maxPerClient int

	mu        sync.Mutex
	total     int
	perClient map[netip.Addr]int
}

// NewConnLimiter returns a limiter; a cap of 0 or less means no limit.
func NewConnLimiter(maxTotal, maxPerClient int) *ConnLimiter {
	return &ConnLimiter{maxTotal: maxTotal, maxPerClient: maxPerClient, perClient: make(map[netip.Addr]int)}
}

// ConnDecision says whether a connection may proceed and, if not, which cap
// it hit.
type ConnDecision int

const (
	ConnAllowed ConnDecision = iota
	ConnTooManyTotal
	ConnTooManyFromClient
)

// Acquire takes a slot for a connection from ip. When the decision is
// ConnAllowed the caller must call Release(ip) exactly once when the
// connection ends.
func (l *ConnLimiter) Acquire(ip netip.Addr) ConnDecision {
	ip = ip.Unmap()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.maxTotal > 0 && l.total >= l.maxTotal {
		return ConnTooManyTotal
	}
	if l.maxPerClient > 0 && l.perClient[ip] >= l.maxPerClient {
		return ConnTooManyFromClient
	}
	l.total++
	l.perClient[ip]++
	return ConnAllowed
}

// Release gives back the slot taken by a successful Acquire.
func (l *ConnLimiter) Release(ip netip.Addr) {
	ip = ip.Unmap()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if n := l.perClient[ip]; n <= 1 {
		delete(l.perClient, ip)
	} else {
		l.perClient[ip] = n - 1
	}
}

// Active reports the number of connections held.
func (l *ConnLimiter) Active() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}
