package relay

import (
	"log/slog"
	"net"
	"os/user"
	"strconv"
	"strings"
)

// peer is what the kernel tells us about the local process at the other end
// of a connection: who sent the mail, which is the first question when a
// host starts spamming. Every field is optional; one the kernel did not
// vouch for is left unset rather than guessed.
type peer struct {
	uid     int    // -1 when unknown
	user    string // login name of uid, "" when uid has no passwd entry
	pid     int    // 0 when unknown (loopback TCP: only the uid is known)
	program string // executable path, or the command name when the path is hidden
}

var unknownPeer = peer{uid: -1}

func (p peer) known() bool { return p.uid >= 0 }

// localUser is the name limits.per_user counts and the spool records: the
// user name, or "uid N" for a uid without a passwd entry.
func (p peer) localUser() string {
	switch {
	case !p.known():
		return ""
	case p.user != "":
		return p.user
	}
	return "uid " + strconv.Itoa(p.uid)
}

// attrs are the audit record fields; unknown ones are left out.
func (p peer) attrs() []slog.Attr {
	if !p.known() {
		return nil
	}
	a := []slog.Attr{slog.Int("uid", p.uid)}
	if p.user != "" {
		a = append(a, slog.String("local_user", p.user))
	}
	if p.pid > 0 {
		a = append(a, slog.Int("pid", p.pid))
	}
	if p.program != "" {
		a = append(a, slog.String("program", p.program))
	}
	return a
}

// comment is the Received field's comment naming the sender, e.g.
// "(uid 1000 alice, /usr/bin/php8.2)"; "" when the peer is unknown. User
// and program names come from the system, but a user may name a program
// anything, so both are sanitised like the HELO name.
func (p peer) comment() string {
	if !p.known() {
		return ""
	}
	s := "uid " + strconv.Itoa(p.uid)
	if p.user != "" {
		s += " " + sanitizeHeaderText(p.user)
	}
	if p.program != "" {
		s += ", " + sanitizeHeaderText(p.program)
	}
	return "(" + s + ")"
}

// lookupPeer finds the local process behind c: the unix socket's
// SO_PEERCRED, or for a loopback TCP client the owner of its socket. It
// reads only the kernel's word, so a client cannot claim to be someone
// else.
func lookupPeer(c net.Conn) peer {
	var p peer
	switch c := c.(type) {
	case *net.UnixConn:
		p = unixPeer(c)
	case *net.TCPConn:
		p = tcpPeer(c)
	default:
		return unknownPeer
	}
	if p.known() {
		if u, err := user.LookupId(strconv.Itoa(p.uid)); err == nil {
			p.user = u.Username
		}
	}
	return p
}

// cleanProcText trims what /proc gives (comm ends in a newline; a deleted
// executable's link ends in " (deleted)", which is worth keeping).
func cleanProcText(s string) string {
	return strings.TrimRight(s, "\n\x00")
}
