package relay

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// unixPeer reads SO_PEERCRED: the uid and pid of the process that
// connected, recorded by the kernel at connect time.
func unixPeer(c *net.UnixConn) peer {
	raw, err := c.SyscallConn()
	if err != nil {
		return unknownPeer
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil || credErr != nil || cred == nil {
		return unknownPeer
	}
	p := peer{uid: int(cred.Uid), pid: int(cred.Pid)}
	p.program = programOf("/proc", p.pid)
	return p
}

// programOf names the program running as pid: the executable's path when
// we may read it (same user, or CAP_SYS_PTRACE), else the command name,
// which every user may read.
func programOf(proc string, pid int) string {
	if pid <= 0 {
		return ""
	}
	dir := proc + "/" + strconv.Itoa(pid)
	if exe, err := os.Readlink(dir + "/exe"); err == nil && exe != "" {
		return exe
	}
	if comm, err := os.ReadFile(dir + "/comm"); err == nil {
		return cleanProcText(string(comm))
	}
	return ""
}

// tcpPeer finds the owner of a loopback TCP client's socket, as identd
// does: the client's end of the connection is in /proc/net/tcp (or tcp6)
// with the local and remote addresses swapped. Only a client on this host
// has that entry. diag may be nil.
func tcpPeer(c *net.TCPConn, diag *diagSockets) peer {
	server, ok1 := addrPort(c.LocalAddr())
	client, ok2 := addrPort(c.RemoteAddr())
	if !ok1 || !ok2 || !(client.Addr().IsLoopback() || client.Addr() == server.Addr()) {
		return unknownPeer
	}
	if uid, found, err := diag.owner(client, server); err == nil {
		if found {
			return peer{uid: uid}
		}
		return unknownPeer
	}
	// No sock_diag (an old or locked-down kernel): read the tables.
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		uid, found := socketOwner(f, client, server)
		f.Close()
		if found {
			return peer{uid: uid}
		}
	}
	return unknownPeer
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ip, ok := netip.AddrFromSlice(tcp.IP)
	if !ok {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(tcp.Port)), true
}

// tcpEstablished is the kernel's TCP_ESTABLISHED in the "st" column. Only
// an established socket has a meaningful owner: one in TIME_WAIT shows
// uid 0 whoever owned it, and must not name root as the sender.
const tcpEstablished = "01"

// socketOwner scans a /proc/net/tcp-format table for the established
// socket whose local end is local and remote end is remote, and returns
// its owner's uid.
func socketOwner(r io.Reader, local, remote netip.AddrPort) (int, bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	sc.Scan() // the column titles
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		f := strings.Fields(sc.Text())
		if len(f) < 10 || f[3] != tcpEstablished || f[9] == "0" {
			continue
		}
		l, ok1 := parseProcAddr(f[1])
		rm, ok2 := parseProcAddr(f[2])
		if !ok1 || !ok2 || l != local || rm != remote {
			continue
		}
		uid, err := strconv.Atoi(f[7])
		if err != nil || uid < 0 {
			return 0, false
		}
		return uid, true
	}
	return 0, false
}

// parseProcAddr decodes "0100007F:0019": the address as the kernel's
// 32-bit words printed in hex in host byte order, then the port in hex.
func parseProcAddr(s string) (netip.AddrPort, bool) {
	hexIP, hexPort, ok := strings.Cut(s, ":")
	if !ok || (len(hexIP) != 8 && len(hexIP) != 32) {
		return netip.AddrPort{}, false
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	raw, err := hex.DecodeString(hexIP)
	if err != nil {
		return netip.AddrPort{}, false
	}
	ip := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(ip[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), true
}
