package relay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
)

// diagSockets keeps a few sock_diag sockets open between lookups: making
// one and closing it (socket, setsockopt, close) cost more than the
// question itself, asked for every connection. A socket goes back to the
// pool only after a clean exchange, so no late reply waits in it; replies
// are matched to their request by sequence number and socket ends anyway.
// A nil *diagSockets keeps nothing: each lookup opens and closes its own.
type diagSockets struct {
	seq atomic.Uint32

	mu     sync.Mutex
	idle   []*diagSocket
	closed bool
}

// maxIdleDiagSockets is how many sessions can look up their peer at the
// same moment without opening a socket; more are served, just not kept.
const maxIdleDiagSockets = 4

type diagSocket struct {
	fd  int
	buf [1024]byte // a reply is one message of about 130 bytes
}

func newDiagSockets() *diagSockets { return &diagSockets{} }

func (d *diagSockets) get() (*diagSocket, error) {
	if d != nil {
		d.mu.Lock()
		if n := len(d.idle); n > 0 {
			s := d.idle[n-1]
			d.idle = d.idle[:n-1]
			d.mu.Unlock()
			return s, nil
		}
		d.mu.Unlock()
	}
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, netlinkSockDiag)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	// The kernel answers while handling the request, so this never waits
	// in practice; it bounds what a broken kernel could make a session wait.
	tv := syscall.Timeval{Sec: 1}
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("sock_diag SO_RCVTIMEO: %w", err)
	}
	return &diagSocket{fd: fd}, nil
}

func (d *diagSockets) put(s *diagSocket) {
	if d != nil {
		d.mu.Lock()
		if !d.closed && len(d.idle) < maxIdleDiagSockets {
			d.idle = append(d.idle, s)
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
	}
	syscall.Close(s.fd)
}

// close closes the idle sockets; sockets in use are closed when they come
// back.
func (d *diagSockets) close() {
	if d == nil {
		return
	}
	d.mu.Lock()
	idle := d.idle
	d.idle, d.closed = nil, true
	d.mu.Unlock()
	for _, s := range idle {
		syscall.Close(s.fd)
	}
}

func (d *diagSockets) nextSeq() uint32 {
	if d == nil {
		return 1
	}
	return d.seq.Add(1)
}

// owner asks the kernel, through netlink's sock_diag, for the owner
// of the one established TCP socket with exactly these ends. It costs one
// request and one reply, where scanning /proc/net/tcp costs reading a line
// for every socket on the host — on a busy relay that scan was a seventh of
// all CPU. ok is false when the kernel knows no such socket; err is set
// when sock_diag itself is unavailable and the caller should fall back.
// A nil d opens and closes a socket for the question.
func (d *diagSockets) owner(local, remote netip.AddrPort) (uid int, ok bool, err error) {
	s, err := d.get()
	if err != nil {
		return 0, false, err
	}
	uid, ok, err = s.ask(d.nextSeq(), local, remote)
	if err != nil {
		// Whatever went wrong may leave a reply behind: never reuse it.
		syscall.Close(s.fd)
		return 0, false, err
	}
	d.put(s)
	return uid, ok, nil
}

// ask sends one request and reads its one reply.
func (s *diagSocket) ask(seq uint32, local, remote netip.AddrPort) (uid int, ok bool, err error) {
	req := diagRequest(seq, local, remote)
	// No address: an unconnected netlink socket sends to the kernel.
	if err := syscall.Sendto(s.fd, req[:], 0, nil); err != nil {
		return 0, false, fmt.Errorf("sock_diag send: %w", err)
	}
	n, _, err := syscall.Recvfrom(s.fd, s.buf[:], 0)
	if err != nil {
		return 0, false, fmt.Errorf("sock_diag receive: %w", err)
	}
	return parseDiagReply(s.buf[:n], req[:])
}

const diagRequestLen = syscall.NLMSG_HDRLEN + inetDiagReqV2Len

// diagRequest asks for the established TCP socket from local to remote.
func diagRequest(seq uint32, local, remote netip.AddrPort) [diagRequestLen]byte {
	family := uint8(syscall.AF_INET)
	if local.Addr().Is6() {
		family = syscall.AF_INET6
	}
	var req [diagRequestLen]byte
	binary.NativeEndian.PutUint32(req[0:], diagRequestLen)
	binary.NativeEndian.PutUint16(req[4:], sockDiagByFamily)
	binary.NativeEndian.PutUint16(req[6:], syscall.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(req[8:], seq)
	r := req[syscall.NLMSG_HDRLEN:]
	r[0] = family
	r[1] = syscall.IPPROTO_TCP
	binary.NativeEndian.PutUint32(r[4:], 1<<tcpStateEstablished)
	putSockID(r[8:8+inetDiagSockIDLen], local, remote)
	return req
}

// parseDiagReply reads the kernel's answer to req. The uid names the
// sender, so an answer to any other request, or about any other socket,
// is an error and never a uid.
func parseDiagReply(reply, req []byte) (uid int, ok bool, err error) {
	seq := binary.NativeEndian.Uint32(req[8:])
	r := req[syscall.NLMSG_HDRLEN:]
	family, id := r[0], r[8:8+inetDiagSockIDLen]
	msgs, err := syscall.ParseNetlinkMessage(reply)
	if err != nil {
		return 0, false, fmt.Errorf("sock_diag reply: %w", err)
	}
	for _, m := range msgs {
		if m.Header.Seq != seq {
			return 0, false, fmt.Errorf("sock_diag: reply to request %d, want %d", m.Header.Seq, seq)
		}
		switch m.Header.Type {
		case syscall.NLMSG_ERROR:
			if len(m.Data) >= 4 {
				if errno := -int32(binary.NativeEndian.Uint32(m.Data)); errno == int32(syscall.ENOENT) {
					return 0, false, nil
				} else if errno != 0 {
					return 0, false, syscall.Errno(errno)
				}
			}
			return 0, false, errors.New("sock_diag: malformed error reply")
		case sockDiagByFamily:
			if len(m.Data) < inetDiagMsgLen {
				return 0, false, errors.New("sock_diag: short reply")
			}
			const ends = 4 + 32 // sport, dport, src, dst
			if m.Data[0] != family || !bytes.Equal(m.Data[4:4+ends], id[:ends]) {
				return 0, false, errors.New("sock_diag: reply about another socket")
			}
			// An established socket only: one in TIME_WAIT shows uid 0
			// whoever owned it, and must not name root as the sender.
			if m.Data[1] != tcpStateEstablished {
				return 0, false, nil
			}
			return int(binary.NativeEndian.Uint32(m.Data[inetDiagMsgUIDOffset:])), true, nil
		}
	}
	return 0, false, nil
}

// Kernel ABI (linux/sock_diag.h, linux/inet_diag.h).
const (
	netlinkSockDiag      = 4  // NETLINK_SOCK_DIAG
	sockDiagByFamily     = 20 // SOCK_DIAG_BY_FAMILY
	tcpStateEstablished  = 1  // TCP_ESTABLISHED
	inetDiagSockIDLen    = 48 // struct inet_diag_sockid
	inetDiagReqV2Len     = 8 + inetDiagSockIDLen
	inetDiagMsgLen       = 4 + inetDiagSockIDLen + 20
	inetDiagMsgUIDOffset = 4 + inetDiagSockIDLen + 12 // after expires, rqueue, wqueue
)

// putSockID writes struct inet_diag_sockid: ports and addresses in network
// byte order, any interface, and "no cookie" so the kernel matches on the
// addresses alone.
func putSockID(b []byte, src, dst netip.AddrPort) {
	binary.BigEndian.PutUint16(b[0:], src.Port())
	binary.BigEndian.PutUint16(b[2:], dst.Port())
	putDiagAddr(b[4:20], src.Addr())
	putDiagAddr(b[20:36], dst.Addr())
	binary.NativeEndian.PutUint32(b[36:], 0)          // interface
	binary.NativeEndian.PutUint32(b[40:], ^uint32(0)) // INET_DIAG_NOCOOKIE
	binary.NativeEndian.PutUint32(b[44:], ^uint32(0))
}

func putDiagAddr(b []byte, a netip.Addr) {
	if a.Is4() {
		v4 := a.As4()
		copy(b, v4[:])
		return
	}
	v6 := a.As16()
	copy(b, v6[:])
}
