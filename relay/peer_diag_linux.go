package relay

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"syscall"
)

// sockDiagOwner asks the kernel, through netlink's sock_diag, for the owner
// of the one established TCP socket with exactly these ends. It costs one
// request and one reply, where scanning /proc/net/tcp costs reading a line
// for every socket on the host — on a busy relay that scan was a seventh of
// all CPU. ok is false when the kernel knows no such socket; err is set
// when sock_diag itself is unavailable and the caller should fall back.
func sockDiagOwner(local, remote netip.AddrPort) (uid int, ok bool, err error) {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, netlinkSockDiag)
	if err != nil {
		return 0, false, err
	}
	defer syscall.Close(fd)
	tv := syscall.Timeval{Sec: 1}
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		return 0, false, err
	}

	family := uint8(syscall.AF_INET)
	if local.Addr().Is6() {
		family = syscall.AF_INET6
	}
	const reqLen = syscall.NLMSG_HDRLEN + inetDiagReqV2Len
	var req [reqLen]byte
	binary.NativeEndian.PutUint32(req[0:], reqLen)
	binary.NativeEndian.PutUint16(req[4:], sockDiagByFamily)
	binary.NativeEndian.PutUint16(req[6:], syscall.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(req[8:], 1) // sequence
	r := req[syscall.NLMSG_HDRLEN:]
	r[0] = family
	r[1] = syscall.IPPROTO_TCP
	binary.NativeEndian.PutUint32(r[4:], 1<<tcpStateEstablished)
	putSockID(r[8:], local, remote)

	sa := &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}
	if err := syscall.Sendto(fd, req[:], 0, sa); err != nil {
		return 0, false, err
	}
	var buf [1024]byte
	n, _, err := syscall.Recvfrom(fd, buf[:], 0)
	if err != nil {
		return 0, false, err
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return 0, false, err
	}
	for _, m := range msgs {
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
