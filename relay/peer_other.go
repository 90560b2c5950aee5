//go:build !linux

package relay

import "net"

// Peer credentials are read from Linux interfaces (SO_PEERCRED, /proc);
// elsewhere the sender stays unknown rather than guessed.

func unixPeer(*net.UnixConn) peer { return unknownPeer }

func tcpPeer(*net.TCPConn, *diagSockets) peer { return unknownPeer }

// diagSockets stands in for Linux's kept sock_diag sockets.
type diagSockets struct{}

func newDiagSockets() *diagSockets { return nil }

func (*diagSockets) close() {}
