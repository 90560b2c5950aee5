package relay

import (
	"bytes"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"sealpost/policy"
)

// guardedListener refuses clients outside the allowed networks and over the
// connection caps before go-smtp ever sees them, so a refused client costs
// one short write and no session.
type guardedListener struct {
	net.Listener
	allowed policy.Networks // nil for a unix socket: file permissions guard it
	limiter *policy.ConnLimiter
	audit   *auditLog
	open    *connSet
}

func (l *guardedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := clientIP(c.RemoteAddr())
		if l.allowed != nil && !l.allowed.Contains(ip) {
			l.audit.refused(ip, "allow_networks", replyNoAccess)
			go refuse(c, replyNoAccess.Code, "5.7.1", replyNoAccess.Message)
			continue
		}
		switch l.limiter.Acquire(ip) {
		case policy.ConnTooManyTotal:
			l.audit.refused(ip, "max_connections", replyBusy)
			go refuse(c, replyBusy.Code, "4.7.0", replyBusy.Message)
			continue
		case policy.ConnTooManyFromClient:
			l.audit.refused(ip, "max_connections_per_client", replyBusy)
			go refuse(c, replyBusy.Code, "4.7.0", "Too many connections from your address, try again later")
			continue
		}
		rc := &releasingConn{Conn: c}
		rc.release = func() {
			l.open.remove(rc)
			l.limiter.Release(ip)
		}
		l.open.add(rc)
		return rc, nil
	}
}

// refuse answers a refused client and hangs up. The deadline keeps a client
// that does not read from pinning the goroutine.
func refuse(c net.Conn, code int, enhanced, msg string) {
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Write([]byte(strconv.Itoa(code) + " " + enhanced + " " + msg + "\r\n"))
}

// releasingConn gives its connection slot back exactly once, however many
// times Close is called, and watches the raw byte stream for bare CR and LF.
type releasingConn struct {
	net.Conn
	once    sync.Once
	release func()
	endings lineEndingWatch
}

func (c *releasingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.endings.scan(p[:n])
	return n, err
}

// lineEndingWatch notices a bare CR or LF anywhere in what the client sends.
// It looks at the wire, before go-smtp's dot-unstuffing: that drops the CR
// of a line starting ".\r", so a bare CR there never reaches the message
// checks. Only the connection's reading goroutine touches it.
type lineEndingWatch struct {
	prevCR bool
	bare   bool
}

func (w *lineEndingWatch) scan(p []byte) {
	for len(p) > 0 && !w.bare {
		if w.prevCR {
			w.bare = p[0] != '\n'
			w.prevCR = false
			p = p[1:]
			continue
		}
		i := bytes.IndexAny(p, "\r\n")
		if i < 0 {
			return
		}
		if p[i] == '\n' {
			w.bare = true
			return
		}
		w.prevCR = true
		p = p[i+1:]
	}
}

// bareLineEnding reports whether the client has sent a bare CR or LF on
// this connection so far.
func bareLineEnding(c net.Conn) bool {
	rc, ok := c.(*releasingConn)
	return ok && rc.endings.bare
}

func (c *releasingConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// clientIP extracts the peer address; unix-socket peers have none and get
// the zero Addr.
func clientIP(a net.Addr) netip.Addr {
	if tcp, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(tcp.IP)
		return ip.Unmap()
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// connSet holds the open client connections so shutdown can end the ones
// still open when the grace period runs out.
type connSet struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func newConnSet() *connSet { return &connSet{conns: make(map[net.Conn]struct{})} }

func (s *connSet) add(c net.Conn) {
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	conns := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}
