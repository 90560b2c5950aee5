package relay

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"sealpost/policy"
)

// writeRecorder is a connection that remembers each write it was given.
type writeRecorder struct {
	net.Conn
	mu     sync.Mutex
	writes []string
}

func (w *writeRecorder) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.writes = append(w.writes, string(p))
	w.mu.Unlock()
	if w.Conn == nil {
		return len(p), nil
	}
	return w.Conn.Write(p)
}

func (w *writeRecorder) recorded() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.writes...)
}

// recordingListener hands out writeRecorders.
type recordingListener struct {
	net.Listener
	conns chan *writeRecorder
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	w := &writeRecorder{Conn: c}
	l.conns <- w
	return w, nil
}

type nopSession struct{}

func (nopSession) Mail(string, *smtp.MailOptions) error { return nil }
func (nopSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (nopSession) Data(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}
func (nopSession) Reset()        {}
func (nopSession) Logout() error { return nil }

// TestMultiLineReplyOneWrite: go-smtp flushes each line of a reply on its
// own; through our listener the whole EHLO reply reaches the socket in one
// write (one segment, one wake-up of the client), and one-line replies go
// out as they are.
func TestMultiLineReplyOneWrite(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingListener{Listener: ln, conns: make(chan *writeRecorder, 1)}
	gl := &guardedListener{Listener: rec, limiter: policy.NewConnLimiter(10, 10), audit: newAuditLog(slog.New(slog.DiscardHandler)), open: newConnSet()}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return nopSession{}, nil }))
	srv.Domain = "relay.test"
	srv.EnableSMTPUTF8 = true
	srv.MaxMessageBytes = 1 << 20
	srv.MaxRecipients = 100
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(gl)
	}()
	defer func() {
		srv.Close()
		<-done
	}()

	c := dialRelay(t, ln.Addr().String())
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	reply := func() []string {
		var lines []string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("read: %v (so far %q)", err, lines)
			}
			lines = append(lines, line)
			if len(line) < 4 || line[3] != '-' {
				return lines
			}
		}
	}
	reply()
	w := <-rec.conns
	if _, err := io.WriteString(c, "EHLO client.test\r\n"); err != nil {
		t.Fatal(err)
	}
	ehlo := reply()
	if len(ehlo) < 5 {
		t.Fatalf("EHLO reply %q: want a multi-line reply", ehlo)
	}
	if _, err := io.WriteString(c, "NOOP\r\n"); err != nil {
		t.Fatal(err)
	}
	noop := reply()
	writes := w.recorded()
	want := []string{writes[0], strings.Join(ehlo, ""), strings.Join(noop, "")}
	if len(writes) != len(want) || writes[1] != want[1] || writes[2] != want[2] {
		t.Errorf("writes to the socket:\n%q\nwant banner, the whole EHLO reply in one, NOOP's:\n%q", writes, want)
	}
}

// TestReleasingConnHoldsOnlyReplyStarts: what is held back is only whole
// "NNN-" lines, never more than maxHeldReply, and everything reaches the
// socket in the order written, with each Write reporting its own length.
func TestReleasingConnHoldsOnlyReplyStarts(t *testing.T) {
	t.Parallel()
	w := &writeRecorder{}
	c := &releasingConn{Conn: w}
	write := func(s string) {
		t.Helper()
		if n, err := c.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	var sent strings.Builder
	for _, s := range []string{
		"220 relay.test ESMTP\r\n",            // one-line reply: at once
		"250-a\r\n", "250-b\r\n", "250 c\r\n", // one write
		"250-partial line",   // not a whole line: at once
		"25-x\r\n",           // not a reply line: at once
		"abc-not digits\r\n", // at once
	} {
		write(s)
		sent.WriteString(s)
	}
	long := "250-" + strings.Repeat("x", 200) + "\r\n"
	for range maxHeldReply/len(long) + 3 { // more than the bound
		write(long)
		sent.WriteString(long)
		if len(c.held) > maxHeldReply {
			t.Fatalf("%d bytes held, bound %d", len(c.held), maxHeldReply)
		}
	}
	write("250 end\r\n")
	sent.WriteString("250 end\r\n")

	writes := w.recorded()
	if got := strings.Join(writes, ""); got != sent.String() {
		t.Fatalf("the socket got\n%q\nwant\n%q", got, sent.String())
	}
	if writes[0] != "220 relay.test ESMTP\r\n" || writes[1] != "250-a\r\n250-b\r\n250 c\r\n" {
		t.Errorf("first writes %q", writes[:2])
	}
	if len(c.held) != 0 {
		t.Errorf("%q still held after the reply's last line", c.held)
	}
}

// TestListenTCPLoopbackWithoutKeepAlive: connections accepted on a
// loopback listener do without TCP keepalive (four setsockopt calls
// each); other addresses keep Go's default.
func TestListenTCPLoopbackWithoutKeepAlive(t *testing.T) {
	t.Parallel()
	// listenTCP decides by ListenAddr.Loopback; "localhost" listens on
	// loopback only, so it counts too.
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:25", true}, {"[::1]:25", true}, {"127.0.0.2:25", true},
		{"192.0.2.1:25", false}, {"[2001:db8::1]:25", false}, {"localhost:25", true},
	} {
		var a ListenAddr
		if err := a.UnmarshalText([]byte(tc.addr)); err != nil {
			t.Fatal(err)
		}
		if got := a.Loopback(); got != tc.want {
			t.Errorf("ListenAddr(%q).Loopback() = %v", tc.addr, got)
		}
	}
	if err := new(ListenAddr).UnmarshalText([]byte("nonsense")); err == nil {
		t.Error(`listen address "nonsense" accepted`)
	}

	ln, err := listenTCP(ListenAddr{Host: "127.0.0.1", Port: "0"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := acceptOne(ln)
	cc := dialRelay(t, ln.Addr().String())
	defer cc.Close()
	sc, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer sc.Close()
	raw, err := sc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var keepAlive int
	var optErr error
	if err := raw.Control(func(fd uintptr) {
		keepAlive, optErr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
	}); err != nil || optErr != nil {
		t.Skipf("SO_KEEPALIVE not readable: %v %v", err, optErr)
	}
	if keepAlive != 0 {
		t.Errorf("SO_KEEPALIVE = %d on a loopback connection, want off", keepAlive)
	}
}

// BenchmarkAccept is one loopback connection accepted and closed, on a
// listener from listenTCP and on a plain one (Go's keepalive defaults).
func BenchmarkAccept(b *testing.B) {
	for _, bc := range []struct {
		name   string
		listen func(ListenAddr) (net.Listener, error)
	}{
		{"listenTCP", listenTCP},
		{"default", func(a ListenAddr) (net.Listener, error) { return net.Listen("tcp", a.String()) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ln, err := bc.listen(ListenAddr{Host: "127.0.0.1", Port: "0"})
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			d := net.Dialer{KeepAlive: -1} // only the server side is measured
			b.ReportAllocs()
			for range b.N {
				c, err := d.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				var one [1]byte
				c.Read(one[:]) // returns when the server has closed
				c.Close()
			}
		})
	}
}
