//go:build !linux

package relay

import "net"

// Peer credentials are read from Linux interfaces (SO_PEERCRED, /proc);
// elsewhere the sender stays unknown rather than guessed.

func unixPeer(*net.UnixConn) peer { return unknownPeer }

func tcpPeer(*net.TCPConn) peer { return unknownPeer }
