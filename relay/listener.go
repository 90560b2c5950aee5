package relay

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
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

	// peers looks up who is behind each connection; made on the first
	// Accept so that a listener built as a plain struct has one too.
	peersOnce sync.Once
	peers     *peerFinder
}

func (l *guardedListener) Accept() (net.Conn, error) {
	l.peersOnce.Do(func() { l.peers = newPeerFinder() })
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
		rc := &releasingConn{Conn: c, owner: l, ip: ip, peers: l.peers}
		l.open.add(rc)
		return rc, nil
	}
}

// Close stops accepting and lets go of the kept peer-lookup sockets.
func (l *guardedListener) Close() error {
	err := l.Listener.Close()
	l.peersOnce.Do(func() {}) // no finder is made after this
	l.peers.close()
	return err
}

// listenTCP listens on a for SMTP clients. On a loopback address TCP
// keepalive is left off: Go turns it on for every accepted connection, four
// setsockopt calls each (the costliest part of an accept here), yet a
// client on this host cannot vanish without the kernel closing its end,
// and one that idles is ended by listen.read_timeout anyway. Elsewhere the
// default stays.
func listenTCP(a ListenAddr) (net.Listener, error) {
	var lc net.ListenConfig
	if a.Loopback() {
		lc.KeepAlive = -1
	}
	return lc.Listen(context.Background(), "tcp", a.String())
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
	released atomic.Bool
	owner    *guardedListener // nil in tests: nothing to give back
	ip       netip.Addr
	endings  lineEndingWatch
	hangup   atomic.Bool

	// The local sender, looked up on first use by the session's goroutine
	// so a slow /proc scan never holds up Accept.
	peers    *peerFinder
	peerOnce sync.Once
	peerVal  peer

	// held is the start of a multi-line reply, written out with its last
	// line (see Write). Only the connection's goroutine writes replies.
	held []byte
}

// peer is the local process behind the connection.
func (c *releasingConn) peer() peer {
	c.peerOnce.Do(func() { c.peerVal = c.peers.lookup(c.Conn) })
	return c.peerVal
}

// hangUpAfterReply ends the connection once the next reply is written. It
// is for a stream that has lost its footing: a stalled DATA, or line
// endings so broken that the end of the message cannot be trusted (go-smtp
// misses "\r\r\n.\r\n", for one). The read deadline is moved to now so
// go-smtp's draining of the rest of DATA gives up at once instead of
// waiting for an end that may never come.
func (c *releasingConn) hangUpAfterReply() {
	c.hangup.Store(true)
	_ = c.Conn.SetReadDeadline(time.Now())
}

// maxHeldReply bounds what Write holds back; an EHLO reply is about 150
// bytes. Past it, what is held goes out early: still in order, only in
// more than one write.
const maxHeldReply = 2048

// Write sends a multi-line reply in one write. go-smtp flushes every line
// of a reply on its own, so the eight lines of the EHLO reply were eight
// write calls and eight TCP segments, each waking the client. A line that
// says more follows ("250-...") is held back until the reply's last line
// ("250 ...") comes; go-smtp always ends a reply with one.
func (c *releasingConn) Write(p []byte) (int, error) {
	if isContinuationLine(p) && len(c.held)+len(p) <= maxHeldReply {
		c.held = append(c.held, p...)
		return len(p), nil
	}
	var n int
	var err error
	if len(c.held) == 0 {
		n, err = c.Conn.Write(p)
	} else {
		held := len(c.held)
		c.held = append(c.held, p...)
		n, err = c.Conn.Write(c.held)
		c.held = c.held[:0]
		n = max(n-held, 0)
	}
	if c.hangup.Load() {
		c.Close()
	}
	return n, err
}

// isContinuationLine reports whether p is one whole reply line that is not
// the reply's last: three digits, a hyphen, text, CRLF.
func isContinuationLine(p []byte) bool {
	return len(p) >= 6 && p[3] == '-' &&
		isDigit(p[0]) && isDigit(p[1]) && isDigit(p[2]) &&
		p[len(p)-2] == '\r' && p[len(p)-1] == '\n'
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

func (c *releasingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.endings.bare.Load() {
		c.endings.scan(p[:n])
		if c.endings.bare.Load() {
			// go-smtp's DATA reader fills its whole buffer before it
			// returns and misses some ends of data after a bare CR, so it
			// could wait for the rest of a message that already ended.
			// Make the next read fail at once; the session sees the flag
			// and refuses the message.
			_ = c.Conn.SetReadDeadline(time.Now())
		}
	}
	return n, err
}

// lineEndingWatch notices a bare CR or LF anywhere in what the client sends.
// It looks at the wire, before go-smtp's dot-unstuffing: that drops the CR
// of a line starting ".\r", so a bare CR there never reaches the message
// checks. Only the connection's reading goroutine scans; bare is atomic
// because with BDAT go-smtp runs Session.Data on a goroutine of its own.
type lineEndingWatch struct {
	prevCR bool // the last byte scanned was a CR
	bare   atomic.Bool
}

// scan jumps from line feed to line feed (IndexByte is vectorised; this
// runs over every byte a client sends): each must follow a CR, and no other
// CR may stand anywhere.
func (w *lineEndingWatch) scan(p []byte) {
	if len(p) == 0 || w.bare.Load() {
		return
	}
	if w.prevCR {
		w.prevCR = false
		if p[0] != '\n' {
			w.bare.Store(true)
			return
		}
		p = p[1:]
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		line := p
		if i >= 0 {
			line = p[:i]
		}
		cr := bytes.IndexByte(line, '\r')
		switch {
		case cr >= 0 && cr != len(line)-1: // a CR followed by something else
			w.bare.Store(true)
			return
		case i < 0: // no LF in what is left: a trailing CR waits for the next read
			w.prevCR = cr >= 0
			return
		case cr < 0: // an LF without its CR
			w.bare.Store(true)
			return
		}
		p = p[i+1:]
	}
}

// hangUpAfterReply marks c (when it is one of ours) to close after the
// next reply.
func hangUpAfterReply(c net.Conn) {
	if rc, ok := c.(*releasingConn); ok {
		rc.hangUpAfterReply()
	}
}

// peerOf is the local process behind c, when the kernel can tell.
func peerOf(c net.Conn) peer {
	if rc, ok := c.(*releasingConn); ok {
		return rc.peer()
	}
	return unknownPeer
}

// bareLineEnding reports whether the client has sent a bare CR or LF on
// this connection so far.
func bareLineEnding(c net.Conn) bool {
	rc, ok := c.(*releasingConn)
	return ok && rc.endings.bare.Load()
}

func (c *releasingConn) Close() error {
	err := c.Conn.Close()
	if l := c.owner; l != nil && c.released.CompareAndSwap(false, true) {
		l.open.remove(c)
		l.limiter.Release(c.ip)
	}
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
