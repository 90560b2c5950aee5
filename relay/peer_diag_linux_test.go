package relay

import (
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"

	"sealpost/policy"
)

// loopbackPair is a connected loopback TCP pair; client and server are the
// two ends as the server sees them (server end local, client end remote).
func loopbackPair(t *testing.T) (serverConn net.Conn, client, server netip.AddrPort) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := acceptOne(ln)
	cc, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	sc, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { sc.Close() })
	server, _ = addrPort(sc.LocalAddr())
	client, _ = addrPort(sc.RemoteAddr())
	return sc, client, server
}

func (d *diagSockets) idleFDs() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	var fds []int
	for _, s := range d.idle {
		fds = append(fds, s.fd)
	}
	return fds
}

// TestDiagSocketsReused: one sock_diag socket answers lookup after lookup
// instead of a new one per connection, gives right answers each time, and
// is closed with the listener; lookups after that still work.
func TestDiagSocketsReused(t *testing.T) {
	t.Parallel()
	_, client, server := loopbackPair(t)
	d := newDiagSockets()
	if _, _, err := d.owner(client, server); err != nil {
		t.Skipf("sock_diag unavailable here: %v", err)
	}
	first := d.idleFDs()
	if len(first) != 1 {
		t.Fatalf("idle sockets after one lookup: %v, want one kept", first)
	}
	for range 5 {
		uid, found, err := d.owner(client, server)
		if err != nil || !found || uid != os.Geteuid() {
			t.Fatalf("owner = %d, %v, %v; want %d", uid, found, err, os.Geteuid())
		}
		missing := netip.AddrPortFrom(client.Addr(), client.Port()+1)
		if _, found, err := d.owner(missing, server); err != nil || found {
			t.Fatalf("a socket that does not exist: found %v, err %v", found, err)
		}
	}
	if again := d.idleFDs(); len(again) != 1 || again[0] != first[0] {
		t.Errorf("idle sockets %v after more lookups, want the same one %v", again, first)
	}

	d.close()
	if idle := d.idleFDs(); len(idle) != 0 {
		t.Errorf("idle sockets after close: %v", idle)
	}
	if uid, found, err := d.owner(client, server); err != nil || !found || uid != os.Geteuid() {
		t.Errorf("lookup after close = %d, %v, %v", uid, found, err)
	}
	if idle := d.idleFDs(); len(idle) != 0 {
		t.Errorf("a closed pool kept socket %v", idle)
	}
}

// TestGuardedListenerKeepsPeerSockets: the listener's sessions share one
// kept sock_diag socket, which closing the listener closes.
func TestGuardedListenerKeepsPeerSockets(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gl := &guardedListener{Listener: ln, limiter: policy.NewConnLimiter(10, 10), audit: newAuditLog(slog.New(slog.DiscardHandler)), open: newConnSet()}
	defer gl.Close()
	for i := range 3 {
		accepted := acceptOne(gl)
		cc, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		sc, ok := <-accepted
		if !ok {
			t.Fatal("accept failed")
		}
		defer sc.Close()
		if p := peerOf(sc); p.uid != os.Geteuid() {
			t.Fatalf("connection %d: peer uid %d, want %d", i, p.uid, os.Geteuid())
		}
		if n := len(gl.peers.diag.idleFDs()); n != 1 {
			t.Skipf("no kept sock_diag socket (%d); sock_diag unavailable?", n)
		}
	}
	gl.Close()
	if idle := gl.peers.diag.idleFDs(); len(idle) != 0 {
		t.Errorf("closing the listener left sockets %v open", idle)
	}
}

// TestDiagSocketsConcurrent: sessions looking up at once each get their own
// answer, and no more sockets are kept than the bound.
func TestDiagSocketsConcurrent(t *testing.T) {
	t.Parallel()
	_, client, server := loopbackPair(t)
	d := newDiagSockets()
	defer d.close()
	if _, _, err := d.owner(client, server); err != nil {
		t.Skipf("sock_diag unavailable here: %v", err)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 16*20)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				uid, found, err := d.owner(client, server)
				if err != nil || !found || uid != os.Geteuid() {
					errs <- "wrong answer"
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	if n := len(d.idleFDs()); n > maxIdleDiagSockets {
		t.Errorf("%d idle sockets kept, bound %d", n, maxIdleDiagSockets)
	}
}

// TestDiagLateReplyNotTaken: a kept socket that still holds the reply to
// an earlier request (about another connection) must not answer the next
// lookup with it. The lookup fails instead (the caller then reads /proc),
// and the socket is not kept.
func TestDiagLateReplyNotTaken(t *testing.T) {
	t.Parallel()
	_, clientA, serverA := loopbackPair(t)
	_, clientB, serverB := loopbackPair(t)
	d := newDiagSockets()
	defer d.close()
	if _, _, err := d.owner(clientA, serverA); err != nil {
		t.Skipf("sock_diag unavailable here: %v", err)
	}
	s, err := d.get()
	if err != nil {
		t.Fatal(err)
	}
	// A request whose reply nobody read, as a timed-out lookup would leave.
	stale := diagRequest(d.nextSeq(), clientA, serverA)
	if err := syscall.Sendto(s.fd, stale[:], 0, nil); err != nil {
		t.Fatal(err)
	}
	d.put(s)

	uid, found, err := d.owner(clientB, serverB)
	if err == nil {
		t.Fatalf("lookup answered %d, %v from a late reply about another connection", uid, found)
	}
	if idle := d.idleFDs(); len(idle) != 0 {
		t.Errorf("the socket with the late reply was kept: %v", idle)
	}
	if uid, found, err := d.owner(clientB, serverB); err != nil || !found || uid != os.Geteuid() {
		t.Errorf("next lookup = %d, %v, %v; want a fresh socket's answer", uid, found, err)
	}
}

// diagReply builds a kernel answer to req: a SOCK_DIAG_BY_FAMILY message
// about the socket id, in state, owned by uid.
func diagReply(seq uint32, family uint8, id []byte, state uint8, uid uint32) []byte {
	b := make([]byte, syscall.NLMSG_HDRLEN+inetDiagMsgLen)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], sockDiagByFamily)
	binary.NativeEndian.PutUint32(b[8:], seq)
	m := b[syscall.NLMSG_HDRLEN:]
	m[0], m[1] = family, state
	copy(m[4:], id)
	binary.NativeEndian.PutUint32(m[inetDiagMsgUIDOffset:], uid)
	return b
}

func diagError(seq uint32, errno syscall.Errno) []byte {
	b := make([]byte, syscall.NLMSG_HDRLEN+4+syscall.NLMSG_HDRLEN)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], syscall.NLMSG_ERROR)
	binary.NativeEndian.PutUint32(b[8:], seq)
	binary.NativeEndian.PutUint32(b[syscall.NLMSG_HDRLEN:], uint32(-int32(errno)))
	return b
}

// TestParseDiagReply: only an answer to this request, about this socket,
// established, gives a uid.
func TestParseDiagReply(t *testing.T) {
	t.Parallel()
	client := netip.MustParseAddrPort("127.0.0.1:54321")
	server := netip.MustParseAddrPort("127.0.0.1:25")
	req := diagRequest(7, client, server)
	id := make([]byte, inetDiagSockIDLen)
	putSockID(id, client, server)
	other := make([]byte, inetDiagSockIDLen)
	putSockID(other, netip.MustParseAddrPort("127.0.0.1:54322"), server)
	otherAddr := make([]byte, inetDiagSockIDLen)
	putSockID(otherAddr, netip.MustParseAddrPort("127.0.0.2:54321"), server)

	tests := []struct {
		name    string
		reply   []byte
		uid     int
		found   bool
		wantErr bool
	}{
		{"the socket", diagReply(7, syscall.AF_INET, id, tcpStateEstablished, 1000), 1000, true, false},
		{"no such socket", diagError(7, syscall.ENOENT), 0, false, false},
		{"TIME_WAIT", diagReply(7, syscall.AF_INET, id, 6, 0), 0, false, false},
		{"reply to another request", diagReply(6, syscall.AF_INET, id, tcpStateEstablished, 1000), 0, false, true},
		{"another port", diagReply(7, syscall.AF_INET, other, tcpStateEstablished, 1000), 0, false, true},
		{"another address", diagReply(7, syscall.AF_INET, otherAddr, tcpStateEstablished, 1000), 0, false, true},
		{"another family", diagReply(7, syscall.AF_INET6, id, tcpStateEstablished, 1000), 0, false, true},
		{"kernel error", diagError(7, syscall.EPERM), 0, false, true},
		{"short", diagReply(7, syscall.AF_INET, id, tcpStateEstablished, 1000)[:syscall.NLMSG_HDRLEN+8], 0, false, true},
	}
	for _, tc := range tests {
		if tc.name == "short" {
			binary.NativeEndian.PutUint32(tc.reply[0:], uint32(len(tc.reply)))
		}
		uid, found, err := parseDiagReply(tc.reply, req[:])
		if uid != tc.uid || found != tc.found || (err != nil) != tc.wantErr {
			t.Errorf("%s: got %d, %v, %v; want %d, %v, error %v", tc.name, uid, found, err, tc.uid, tc.found, tc.wantErr)
		}
	}
}

// BenchmarkSockDiagOwner is the sock_diag question per connection, on a
// kept socket and on a socket made for it.
func BenchmarkSockDiagOwner(b *testing.B) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	accepted := acceptOne(ln)
	cc, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	sc := <-accepted
	if sc == nil {
		b.Fatal("accept failed")
	}
	defer sc.Close()
	server, _ := addrPort(sc.LocalAddr())
	client, _ := addrPort(sc.RemoteAddr())
	for _, bc := range []struct {
		name string
		keep bool
	}{{"kept", true}, {"fresh", false}} {
		b.Run(bc.name, func(b *testing.B) {
			var d *diagSockets // nil opens a socket per lookup
			if bc.keep {
				d = newDiagSockets()
				defer d.close()
			}
			b.ReportAllocs()
			for range b.N {
				if _, ok, err := d.owner(client, server); !ok || err != nil {
					b.Fatal(ok, err)
				}
			}
		})
	}
}
