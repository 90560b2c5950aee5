package relay

import (
	"errors"
	"log/slog"
	"net"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"time"
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
// else. It keeps nothing between calls; the listener uses a peerFinder.
func lookupPeer(c net.Conn) peer {
	return (*peerFinder)(nil).lookup(c)
}

// peerFinder is lookupPeer for a listener: it keeps between connections
// what costs more to make than to use, a sock_diag socket to ask the
// kernel with and the names of recently seen uids. Only the uid's name is
// ever reused; the uid itself comes fresh from the kernel every time.
type peerFinder struct {
	diag  *diagSockets
	names *userNames
}

func newPeerFinder() *peerFinder {
	return &peerFinder{diag: newDiagSockets(), names: newUserNames(lookupUserName)}
}

// lookup finds the peer of c; a nil finder opens and closes what it needs.
func (f *peerFinder) lookup(c net.Conn) peer {
	var diag *diagSockets
	if f != nil {
		diag = f.diag
	}
	var p peer
	switch c := c.(type) {
	case *net.UnixConn:
		p = unixPeer(c)
	case *net.TCPConn:
		p = tcpPeer(c, diag)
	default:
		return unknownPeer
	}
	if p.known() {
		if f != nil {
			p.user = f.names.name(p.uid)
		} else {
			p.user, _ = lookupUserName(p.uid)
		}
	}
	return p
}

// close releases the kept sockets; lookups after it still work, they just
// keep nothing.
func (f *peerFinder) close() {
	if f != nil {
		f.diag.close()
	}
}

// lookupUserName is the login name of uid, "" when uid has no passwd
// entry. err is set only when the answer is not known (passwd unreadable):
// such an answer must not be remembered.
func lookupUserName(uid int) (string, error) {
	u, err := user.LookupId(strconv.Itoa(uid))
	var unknown user.UnknownUserIdError
	switch {
	case err == nil:
		return u.Username, nil
	case errors.As(err, &unknown):
		return "", nil
	}
	return "", err
}

// userNameTTL is how long a uid's name is reused, as nscd does: short
// enough that a renamed or removed account shows within half a minute in
// the audit log and the Received field, long enough that a program sending
// a burst of mail does not make every connection read /etc/passwd (a scan
// of the whole file, longer the more accounts the host has).
const userNameTTL = 30 * time.Second

// maxUserNames bounds the cache: a host has few users that send mail, and a
// flood of connections from many uids must not grow memory without end.
const maxUserNames = 512

// userNames remembers the login names of recently seen uids.
type userNames struct {
	lookup func(uid int) (string, error)
	now    func() time.Time // a test's clock; time.Now when nil
	max    int

	mu    sync.Mutex
	byUID map[int]cachedName
}

type cachedName struct {
	name    string
	expires time.Time
}

func newUserNames(lookup func(uid int) (string, error)) *userNames {
	return &userNames{lookup: lookup, max: maxUserNames, byUID: make(map[int]cachedName)}
}

func (n *userNames) clock() time.Time {
	if n.now != nil {
		return n.now()
	}
	return time.Now()
}

// name is uid's login name, "" when it has none. The lookup runs outside
// the lock: with NSS it can be slow, and other uids need not wait for it.
func (n *userNames) name(uid int) string {
	now := n.clock()
	n.mu.Lock()
	c, ok := n.byUID[uid]
	n.mu.Unlock()
	if ok && now.Before(c.expires) {
		return c.name
	}
	name, err := n.lookup(uid)
	if err != nil {
		return name
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.byUID[uid]; !ok && len(n.byUID) >= n.max {
		n.evict(now)
	}
	n.byUID[uid] = cachedName{name: name, expires: now.Add(userNameTTL)}
	return name
}

// evict makes room for one entry: the expired ones go, and if none had
// expired, one arbitrary entry (it is looked up again when next needed).
func (n *userNames) evict(now time.Time) {
	for uid, c := range n.byUID {
		if !now.Before(c.expires) {
			delete(n.byUID, uid)
		}
	}
	for uid := range n.byUID {
		if len(n.byUID) < n.max {
			break
		}
		delete(n.byUID, uid)
	}
}

// cleanProcText trims what /proc gives (comm ends in a newline; a deleted
// executable's link ends in " (deleted)", which is worth keeping).
func cleanProcText(s string) string {
	return strings.TrimRight(s, "\n\x00")
}
