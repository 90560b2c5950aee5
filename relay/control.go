package relay

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"sealpost/spool"
)

// The control socket lets `sealpost queue flush|delete` steer the running
// daemon, which holds the spool lock. The protocol is one JSON line each
// way per connection: a ControlRequest, then a ControlReply. Access is the
// socket's file mode (0660): the service user, its group and root.

// ControlRequest asks the daemon to act on its queue.
type ControlRequest struct {
	Op string `json:"op"`           // "flush" or "delete"
	ID string `json:"id,omitempty"` // for delete
}

// ControlReply is the daemon's answer.
type ControlReply struct {
	OK       bool   `json:"ok"`
	Error    string `json:"error,omitempty"`
	NotFound bool   `json:"not_found,omitempty"` // delete: no such queued message
	Queued   int    `json:"queued"`              // messages in the queue after the operation
	// Loading says Queued is not the whole queue yet: the daemon started
	// recently and is still loading the queue it found.
	Loading bool `json:"loading,omitempty"`
}

// ErrNoDaemon is returned (wrapped) by Control when nothing listens on the
// control socket.
var ErrNoDaemon = errors.New("no sealpost daemon is listening on the control socket")

// controlTimeout bounds one control exchange on either side, so a stuck
// client cannot hold a daemon goroutine.
const controlTimeout = 10 * time.Second

// Control sends req to the daemon listening at path.
func Control(ctx context.Context, path string, req ControlRequest) (ControlReply, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || isConnRefused(err) {
			return ControlReply{}, fmt.Errorf("%s: %w", path, ErrNoDaemon)
		}
		return ControlReply{}, fmt.Errorf("control socket %s: %w", path, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(controlTimeout))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return ControlReply{}, fmt.Errorf("control socket %s: %w", path, err)
	}
	var rep ControlReply
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&rep); err != nil {
		return ControlReply{}, fmt.Errorf("control socket %s: reading the reply: %w", path, err)
	}
	return rep, nil
}

// isConnRefused: a socket file left by a daemon that died (kill -9).
func isConnRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// listenControl opens the control socket. Not 0666 like the submission
// socket: deleting mail is for the service user, its group (admins) and
// root.
func listenControl(path string) (net.Listener, error) {
	return listenUnix(path, "listen.control_socket", 0o660)
}

// serveControl answers control requests until l is closed.
func (r *Relay) serveControl(l net.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		wg.Go(func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(controlTimeout))
			rep := r.handleControl(c)
			json.NewEncoder(c).Encode(rep)
		})
	}
}

func (r *Relay) handleControl(c net.Conn) ControlReply {
	var req ControlRequest
	// One small JSON object: a limit keeps a confused client from
	// making the daemon buffer without end.
	if err := json.NewDecoder(bufio.NewReader(&limitedConn{c, 4096})).Decode(&req); err != nil {
		return ControlReply{Error: "bad request: " + err.Error()}
	}
	who := lookupPeer(c).attrs()
	var rep ControlReply
	switch req.Op {
	case "flush":
		r.routes.retryNow()
		r.spool.Flush()
		r.log.LogAttrs(context.Background(), slog.LevelInfo, "queue flushed on request", who...)
		rep.OK = true
	case "delete":
		id, err := spool.ParseID(req.ID)
		if err != nil {
			return ControlReply{Error: err.Error()}
		}
		m, err := r.spool.Get(id)
		if err == nil {
			err = r.spool.Delete(id)
		}
		switch {
		case errors.Is(err, spool.ErrNotFound):
			return ControlReply{NotFound: true, Error: fmt.Sprintf("no queued message %s", id)}
		case err != nil:
			return ControlReply{Error: err.Error()}
		}
		// The spool's own "deleted" event says that it happened; this
		// record says who asked, with the envelope that was thrown away.
		attrs := append([]slog.Attr{
			slog.String("queue_id", string(id)),
			slog.String("mail_from", m.Envelope.From),
			slog.Any("rcpt", m.Pending()),
			slog.String("requested_by", "queue delete"),
		}, who...)
		r.audit.record("delete-requested", attrs...)
		rep.OK = true
	default:
		return ControlReply{Error: fmt.Sprintf("unknown operation %q", req.Op)}
	}
	// From the spool's memory: listing the disk would read and decode every
	// message (hundreds of megabytes for a queue of 100,000).
	rep.Loading = r.spool.Loading()
	rep.Queued, _ = r.spool.Stats()
	return rep
}

// limitedConn reads at most n bytes from a connection.
type limitedConn struct {
	c net.Conn
	n int64
}

func (l *limitedConn) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("request too long")
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.c.Read(p)
	l.n -= int64(n)
	return n, err
}
