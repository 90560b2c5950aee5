package upstream_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"sealpost/upstream"
	"sealpost/upstream/upstreamtest"
)

// scriptDeliver sends testMessage through p.
func scriptDeliver(t *testing.T, p *upstream.Pool, to ...string) ([]error, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	perRcpt, _, err := p.Deliver(ctx, upstream.Message{From: "app@example.com", To: to, Size: int64(len(testMessage))}, strings.NewReader(testMessage))
	return perRcpt, err
}

// testMessageOnWire is testMessage dot-stuffed.
var testMessageOnWire = strings.Replace(testMessage, "\r\n.leading", "\r\n..leading", 1)

// TestPipelinedEnvelopeInOneWrite: with PIPELINING advertised, RSET (on
// a reused connection), MAIL, every RCPT and DATA reach the server in one
// piece; without it, each command waits for its reply.
func TestPipelinedEnvelopeInOneWrite(t *testing.T) {
	t.Parallel()
	to := []string{"a@example.org", "b@example.org", "c@example.org"}
	for _, pipelining := range []bool{true, false} {
		t.Run(map[bool]string{true: "pipelining", false: "lockstep"}[pipelining], func(t *testing.T) {
			t.Parallel()
			srv := newScriptServer(t, scriptOpts{pipelining: pipelining})
			p := upstream.NewPool(newClient(t, srv.config(t)), upstream.PoolConfig{MaxConnections: 1})
			defer p.Close()
			for i := range 2 {
				perRcpt, err := scriptDeliver(t, p, to...)
				if err != nil || slices.ContainsFunc(perRcpt, func(e error) bool { return e != nil }) {
					t.Fatalf("message %d: %v %v", i, perRcpt, err)
				}
			}
			_, msgs, _, violations := srv.snapshot()
			if len(msgs) != 2 || msgs[1].data != testMessageOnWire || !slices.Equal(msgs[1].to, to) || msgs[1].from != "app@example.com" {
				t.Fatalf("server received %v", msgs)
			}
			if len(violations) != 0 {
				t.Errorf("commands sent before their predecessor's reply without PIPELINING: %q", violations)
			}
			want := "MAIL RCPT RCPT RCPT DATA RSET MAIL RCPT RCPT RCPT DATA"
			if pipelining {
				want = "MAIL+ RCPT+ RCPT+ RCPT+ DATA RSET+ MAIL+ RCPT+ RCPT+ RCPT+ DATA"
			}
			if got := strings.Join(srv.transactionLines(1), " "); got != want {
				t.Errorf("commands (+: more bytes had arrived with it)\n got %s\nwant %s", got, want)
			}
			if n := srv.connections(); n != 1 {
				t.Errorf("%d connections, want 1", n)
			}
		})
	}
}

// TestPoolMessageWrites counts the client's writes (TLS records) for a
// message on a reused connection to the go-smtp upstream: one for the
// envelope, one for the body and its final dot.
func TestPoolMessageWrites(t *testing.T) {
	t.Parallel()
	f := newUpstream(t, upstreamtest.Options{TLS: upstreamtest.TLSStartTLS, Users: map[string]string{user: password}})
	cfg := f.config(t, "starttls")
	var writes atomic.Int64
	var d net.Dialer
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &writeCounter{Conn: c, writes: &writes}, nil
	}
	p := upstream.NewPool(newClient(t, cfg), upstream.PoolConfig{MaxConnections: 1})
	defer p.Close()
	to := []string{"a@example.org", "b@example.org", "c@example.org"}
	if _, err := scriptDeliver(t, p, to...); err != nil {
		t.Fatal(err)
	}
	before := writes.Load()
	if _, err := scriptDeliver(t, p, to...); err != nil {
		t.Fatal(err)
	}
	if n := writes.Load() - before; n != 2 {
		t.Errorf("a reused connection took %d writes for one message to 3 recipients, want 2", n)
	}
	if msgs := f.srv.Expect(t, 2); string(msgs[1].Data) != testMessage || len(msgs[1].To) != 3 {
		t.Errorf("second message %+v", msgs[1])
	}
}

// TestPipelinedRecipientOutcomes: each recipient's reply decides its fate
// exactly as in a command-by-command dialogue.
func TestPipelinedRecipientOutcomes(t *testing.T) {
	t.Parallel()
	rcpt := func(addr string) string {
		switch {
		case strings.HasPrefix(addr, "gone@"):
			return "550 5.1.1 No such user"
		case strings.HasPrefix(addr, "full@"):
			return "450 4.2.2 Mailbox full"
		}
		return ""
	}
	for _, pipelining := range []bool{true, false} {
		t.Run(map[bool]string{true: "pipelining", false: "lockstep"}[pipelining], func(t *testing.T) {
			t.Parallel()
			srv := newScriptServer(t, scriptOpts{pipelining: pipelining, rcpt: rcpt})
			p := upstream.NewPool(newClient(t, srv.config(t)), upstream.PoolConfig{MaxConnections: 1})
			defer p.Close()
			perRcpt, err := scriptDeliver(t, p, "gone@example.org", "ok@example.org", "full@example.org", "ok2@example.org")
			if err != nil {
				t.Fatal(err)
			}
			if len(perRcpt) != 4 || perRcpt[1] != nil || perRcpt[3] != nil {
				t.Fatalf("perRcpt = %v", perRcpt)
			}
			gone, full := asError(t, perRcpt[0]), asError(t, perRcpt[2])
			if gone.Op != "rcpt" || gone.Code != 550 || gone.EnhancedCode != [3]int{5, 1, 1} || gone.Temporary() {
				t.Errorf("550 recipient: %+v, want permanent", gone)
			}
			if full.Op != "rcpt" || full.Code != 450 || !full.Temporary() {
				t.Errorf("450 recipient: %+v, want temporary", full)
			}
			_, msgs, _, violations := srv.snapshot()
			if len(msgs) != 1 || !slices.Equal(msgs[0].to, []string{"ok@example.org", "ok2@example.org"}) {
				t.Errorf("server received %v", msgs)
			}
			if len(violations) != 0 {
				t.Errorf("pipelined without PIPELINING: %q", violations)
			}
		})
	}
}

// TestRefusalsSurviveALostConnection: a recipient refused for good keeps
// its own answer when the connection is lost afterwards (here at DATA),
// so it is bounced instead of being tried again with the rest.
func TestRefusalsSurviveALostConnection(t *testing.T) {
	t.Parallel()
	refuse := func(addr string) string {
		if strings.HasPrefix(addr, "gone@") {
			return "550 5.1.1 No such user"
		}
		return ""
	}
	for _, pipelining := range []bool{true, false} {
		t.Run(map[bool]string{true: "pipelining", false: "lockstep"}[pipelining], func(t *testing.T) {
			t.Parallel()
			srv := newScriptServer(t, scriptOpts{pipelining: pipelining, rcpt: refuse, hangUpAtData: true})
			p := upstream.NewPool(newClient(t, srv.config(t)), upstream.PoolConfig{MaxConnections: 1})
			defer p.Close()
			perRcpt, err := scriptDeliver(t, p, "gone@example.org", "ok@example.org")
			if err == nil || !asError(t, err).Temporary() {
				t.Fatalf("delivery over a lost connection: %v, want a temporary error", err)
			}
			if len(perRcpt) != 2 || perRcpt[1] != nil {
				t.Fatalf("perRcpt = %v, want the refusal and nothing for the other", perRcpt)
			}
			if gone := asError(t, perRcpt[0]); gone.Code != 550 || gone.Temporary() {
				t.Errorf("refused recipient: %+v, want its permanent 550", gone)
			}
		})
	}
}

// TestPipelinedAllRecipientsRefused: no body is sent when every RCPT is
// refused. A pipelined DATA the server refuses needs nothing more; one it
// answers with 354 gets a lone dot (RFC 2920 section 3.1, as Postfix
// does), whose refusal is read. Either way the connection stays in step
// and carries the next message.
func TestPipelinedAllRecipientsRefused(t *testing.T) {
	t.Parallel()
	refuse := func(addr string) string {
		if strings.HasPrefix(addr, "gone@") {
			return "550 5.1.1 No such user"
		}
		if strings.HasPrefix(addr, "full@") {
			return "452 4.2.2 Mailbox full"
		}
		return ""
	}
	for _, tt := range []struct {
		name      string
		opts      scriptOpts
		wantLines string
		wantDots  int
	}{
		{name: "pipelining, DATA refused", opts: scriptOpts{pipelining: true, rcpt: refuse},
			wantLines: "MAIL+ RCPT+ RCPT+ DATA RSET+ MAIL+ RCPT+ DATA"},
		{name: "pipelining, DATA 354 anyway", opts: scriptOpts{pipelining: true, rcpt: refuse, data: "354 go ahead"},
			wantLines: "MAIL+ RCPT+ RCPT+ DATA RSET+ MAIL+ RCPT+ DATA", wantDots: 1},
		{name: "lockstep", opts: scriptOpts{rcpt: refuse},
			wantLines: "MAIL RCPT RCPT RSET MAIL RCPT DATA"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newScriptServer(t, tt.opts)
			p := upstream.NewPool(newClient(t, srv.config(t)), upstream.PoolConfig{MaxConnections: 1})
			defer p.Close()
			perRcpt, err := scriptDeliver(t, p, "gone@example.org", "full@example.org")
			if !errors.Is(err, upstream.ErrAllRecipientsRefused) {
				t.Fatalf("err = %v, want ErrAllRecipientsRefused", err)
			}
			if len(perRcpt) != 2 || asError(t, perRcpt[0]).Code != 550 || upstream.IsTemporary(perRcpt[0]) || asError(t, perRcpt[1]).Code != 452 || !upstream.IsTemporary(perRcpt[1]) {
				t.Errorf("perRcpt = %v", perRcpt)
			}
			if _, err := scriptDeliver(t, p, "ok@example.org"); err != nil {
				t.Fatalf("next message on the same connection: %v", err)
			}
			_, msgs, dots, violations := srv.snapshot()
			if len(msgs) != 1 || msgs[0].data != testMessageOnWire || !slices.Equal(msgs[0].to, []string{"ok@example.org"}) {
				t.Errorf("server received %v; want only the second message", msgs)
			}
			if dots != tt.wantDots {
				t.Errorf("%d lone dots, want %d", dots, tt.wantDots)
			}
			if got := strings.Join(srv.transactionLines(1), " "); got != tt.wantLines {
				t.Errorf("commands\n got %s\nwant %s", got, tt.wantLines)
			}
			if len(violations) != 0 {
				t.Errorf("pipelined without PIPELINING: %q", violations)
			}
			if n := srv.connections(); n != 1 {
				t.Errorf("%d connections, want 1", n)
			}
		})
	}
}

// TestPipelinedMailRefused: the replies to the RCPTs and DATA sent behind
// a refused MAIL are read, so the connection stays in step for the next
// message. A server that refuses MAIL yet answers DATA with 354 is not
// sent a dot (that could deliver an empty message); the connection is
// dropped instead.
func TestPipelinedMailRefused(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		opts      scriptOpts
		code      int
		temporary bool
		wantConns int
	}{
		{name: "550", opts: scriptOpts{pipelining: true, mail: "550 5.7.1 Sender refused"}, code: 550, wantConns: 1},
		{name: "451", opts: scriptOpts{pipelining: true, mail: "451 4.7.1 Slow down"}, code: 451, temporary: true, wantConns: 1},
		{name: "lockstep 550", opts: scriptOpts{mail: "550 5.7.1 Sender refused"}, code: 550, wantConns: 1},
		{name: "DATA 354 after refused MAIL", opts: scriptOpts{pipelining: true, mail: "550 5.7.1 Sender refused", data: "354 go ahead"}, code: 550, wantConns: 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newScriptServer(t, tt.opts)
			p := upstream.NewPool(newClient(t, srv.config(t)), upstream.PoolConfig{MaxConnections: 1})
			defer p.Close()
			for i := range 2 {
				perRcpt, err := scriptDeliver(t, p, "a@example.org", "b@example.org")
				e := asError(t, err)
				if e.Op != "mail" || e.Code != tt.code || e.Temporary() != tt.temporary {
					t.Fatalf("message %d: err = %v, want mail %d temporary=%v", i, err, tt.code, tt.temporary)
				}
				if slices.ContainsFunc(perRcpt, func(e error) bool { return e != nil }) {
					t.Errorf("perRcpt = %v; the recipients share the MAIL error", perRcpt)
				}
			}
			_, msgs, dots, violations := srv.snapshot()
			if len(msgs) != 0 || dots != 0 {
				t.Errorf("server received %v and %d lone dots", msgs, dots)
			}
			if len(violations) != 0 {
				t.Errorf("pipelined without PIPELINING: %q", violations)
			}
			if n := srv.connections(); n != tt.wantConns {
				t.Errorf("%d connections, want %d", n, tt.wantConns)
			}
		})
	}
}

// TestPoolIdleConnectionClosedByServer: the RSET sent ahead of a reused
// connection's MAIL finds the server gone (421 and hang-up); the message
// goes out once, on a fresh connection.
func TestPoolIdleConnectionClosedByServer(t *testing.T) {
	t.Parallel()
	srv := newScriptServer(t, scriptOpts{pipelining: true, rset: "421 4.4.2 Idle timeout"})
	p := upstream.NewPool(newClient(t, srv.config(t)), upstream.PoolConfig{MaxConnections: 1})
	defer p.Close()
	for i := range 2 {
		if _, err := scriptDeliver(t, p, "a@example.org"); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	_, msgs, _, _ := srv.snapshot()
	if len(msgs) != 2 {
		t.Errorf("server received %d messages, want 2", len(msgs))
	}
	if n := srv.connections(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// TestAddressWithLineBreak: an address cannot smuggle a command into the
// pipelined group.
func TestAddressWithLineBreak(t *testing.T) {
	t.Parallel()
	srv := newScriptServer(t, scriptOpts{pipelining: true})
	p := upstream.NewPool(newClient(t, srv.config(t)), upstream.PoolConfig{MaxConnections: 1})
	defer p.Close()
	_, err := scriptDeliver(t, p, "a@example.org>\r\nRCPT TO:<evil@example.net")
	if e := asError(t, err); e.Op != "mail" || e.Temporary() {
		t.Errorf("err = %v, want a permanent mail error", err)
	}
	for _, l := range srv.transactionLines(1) {
		t.Errorf("server saw %s", l)
	}
	if _, err := scriptDeliver(t, p, "a@example.org"); err != nil {
		t.Fatal(err)
	}
}

// TestEndlessReply: a reply that never ends is cut off, not buffered.
func TestEndlessReply(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("250-"+strings.Repeat("x", 500)+"\r\n", 200) + "250 OK"
	srv := newScriptServer(t, scriptOpts{pipelining: true, mail: long})
	p := upstream.NewPool(newClient(t, srv.config(t)), upstream.PoolConfig{MaxConnections: 1})
	defer p.Close()
	_, err := scriptDeliver(t, p, "a@example.org")
	if e := asError(t, err); e.Op != "mail" || e.Code != 0 || !e.Temporary() || !strings.Contains(err.Error(), "reply longer than") {
		t.Errorf("err = %v, want a temporary mail error about the reply's length", err)
	}
	if p.Idle() != 0 {
		t.Error("the connection was kept")
	}
}

// TestPipelinedGroupsAreBounded: a long recipient list goes out in groups
// of at most 100 commands, each waiting for the replies of the one
// before, so neither side can fill its buffers with unread data.
func TestPipelinedGroupsAreBounded(t *testing.T) {
	t.Parallel()
	srv := newScriptServer(t, scriptOpts{pipelining: true})
	p := upstream.NewPool(newClient(t, srv.config(t)), upstream.PoolConfig{MaxConnections: 1})
	defer p.Close()
	to := make([]string, 250)
	for i := range to {
		to[i] = fmt.Sprintf("r%d@example.org", i)
	}
	if _, err := scriptDeliver(t, p, to...); err != nil {
		t.Fatal(err)
	}
	_, msgs, _, _ := srv.snapshot()
	if len(msgs) != 1 || !slices.Equal(msgs[0].to, to) {
		t.Fatalf("server received %v", msgs)
	}
	lines := srv.transactionLines(1) // MAIL, 250 RCPT, DATA
	if len(lines) != 252 {
		t.Fatalf("%d commands, want 252", len(lines))
	}
	for _, i := range []int{99, 199, 251} {
		if strings.HasSuffix(lines[i], "+") {
			t.Errorf("command %d (%s) was followed by more before its reply", i+1, lines[i])
		}
	}
}
