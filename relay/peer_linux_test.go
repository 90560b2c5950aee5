package relay

import (
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
)

func TestParseProcAddr(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"0100007F:0019", "127.0.0.1:25", true},
		{"0100007F:D431", "127.0.0.1:54321", true},
		{"00000000000000000000000001000000:0019", "[::1]:25", true},
		{"0000000000000000FFFF00000100007F:0019", "127.0.0.1:25", true}, // v4-mapped
		{"0100007F", "", false},
		{"0100007:0019", "", false},
		{"0100007F:ZZ", "", false},
	}
	if runtime.GOARCH == "s390x" || runtime.GOARCH == "ppc64" {
		t.Skip("fixtures are little-endian")
	}
	for _, tc := range tests {
		got, ok := parseProcAddr(tc.in)
		if ok != tc.ok || (ok && got.String() != tc.want) {
			t.Errorf("parseProcAddr(%q) = %v, %v; want %s, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestSocketOwner(t *testing.T) {
	t.Parallel()
	if runtime.GOARCH == "s390x" || runtime.GOARCH == "ppc64" {
		t.Skip("fixtures are little-endian")
	}
	// The client 127.0.0.1:54321 → server 127.0.0.1:25, owned by uid 1000;
	// the server's end (uid 999); and a TIME_WAIT socket on the same ports,
	// which the kernel shows with uid 0 and inode 0.
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0019 0100007F:D431 01 00000000:00000000 00:00000000 00000000   999        0 4242 1 0000000000000000 20 4 30 10 -1
   1: 0100007F:D432 0100007F:0019 06 00000000:00000000 03:00001234 00000000     0        0 0 3 0000000000000000
   2: 0100007F:D431 0100007F:0019 01 00000000:00000000 00:00000000 00000000  1000        0 4243 1 0000000000000000 20 4 30 10 -1
`
	client := netip.MustParseAddrPort("127.0.0.1:54321")
	server := netip.MustParseAddrPort("127.0.0.1:25")
	if uid, ok := socketOwner(strings.NewReader(table), client, server); !ok || uid != 1000 {
		t.Errorf("owner of the client socket = %d, %v; want 1000", uid, ok)
	}
	timeWait := netip.MustParseAddrPort("127.0.0.1:54322")
	if uid, ok := socketOwner(strings.NewReader(table), timeWait, server); ok {
		t.Errorf("a TIME_WAIT socket named uid %d: an unknown owner must stay unknown", uid)
	}
	if _, ok := socketOwner(strings.NewReader(table), server, netip.MustParseAddrPort("127.0.0.1:1")); ok {
		t.Error("matched a socket with the wrong remote end")
	}
}

// TestSockDiagMatchesProcTables: the netlink lookup and the /proc scan agree
// on the owner of a real loopback connection, and neither finds a socket
// that does not exist.
func TestSockDiagMatchesProcTables(t *testing.T) {
	t.Parallel()
	for _, network := range []string{"tcp4", "tcp6"} {
		host := "127.0.0.1"
		if network == "tcp6" {
			host = "[::1]"
		}
		ln, err := net.Listen(network, host+":0")
		if err != nil {
			t.Logf("%s: %v", network, err)
			continue
		}
		defer ln.Close()
		accepted := acceptOne(ln)
		client, err := net.Dial(network, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		server, ok := <-accepted
		if !ok {
			t.Fatal("accept failed")
		}
		defer server.Close()
		local, _ := addrPort(server.LocalAddr())
		remote, _ := addrPort(server.RemoteAddr())

		uid, found, err := (*diagSockets)(nil).owner(remote, local)
		if err != nil {
			t.Skipf("sock_diag unavailable here: %v", err)
		}
		if !found || uid != os.Geteuid() {
			t.Errorf("%s: sock_diag owner = %d, %v; want %d", network, uid, found, os.Geteuid())
		}
		if got := tcpPeer(server.(*net.TCPConn), nil); got.uid != os.Geteuid() {
			t.Errorf("%s: tcpPeer uid = %d", network, got.uid)
		}
		missing := netip.AddrPortFrom(remote.Addr(), remote.Port()+1)
		if _, found, err := (*diagSockets)(nil).owner(missing, local); err != nil || found {
			t.Errorf("%s: a socket that does not exist: found %v, err %v", network, found, err)
		}
	}
}
