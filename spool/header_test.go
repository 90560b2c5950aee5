package spool

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

// TestPutIDHeader: fields computed from the whole body (a DKIM signature)
// are asked for only after the body has been read, and are delivered in
// front of it, on every attempt and after a restart.
func TestPutIDHeader(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	body := &trackingReader{r: strings.NewReader("Subject: x\r\n\r\nhello\r\n")}
	id := te.s.NewID()
	header := func() ([]byte, error) {
		if !body.eof {
			t.Error("header asked for before the body was read to its end")
		}
		return []byte("DKIM-Signature: v=1; b=abc\r\n"), nil
	}
	env := Envelope{From: "a@example.com", To: []string{"b@example.net"}}
	if err := te.s.PutID(context.Background(), id, env, body, header); err != nil {
		t.Fatal(err)
	}
	want := "DKIM-Signature: v=1; b=abc\r\nSubject: x\r\n\r\nhello\r\n"
	if got := string(readBody(t, te.s, id)); got != want {
		t.Errorf("OpenBody = %q, want %q", got, want)
	}
	m, err := te.s.Get(id)
	if err != nil || m.Size != int64(len(want)) {
		t.Errorf("Size = %d, %v; want %d", m.Size, err, len(want))
	}
	te.s.Close()
	s := te.open(t, Options{})
	d := &deliverer{}
	stop := run(t, s, d)
	defer stop()
	te.ev.wait(t, EventDelivered, id)
	if calls := d.Calls(); len(calls) != 1 || string(calls[0].body) != want {
		t.Errorf("delivered %+v, want body %q", calls, want)
	}
}

func TestPutIDHeaderErrorCommitsNothing(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	boom := errors.New("signing failed")
	err := te.s.PutID(context.Background(), te.s.NewID(), Envelope{To: []string{"b@example.net"}}, strings.NewReader("x\r\n"), func() ([]byte, error) { return nil, boom })
	if !errors.Is(err, boom) {
		t.Fatalf("PutID = %v, want the header error", err)
	}
	if msgs, _ := te.s.List(); len(msgs) != 0 {
		t.Errorf("%d messages queued after a failed header", len(msgs))
	}
}

func TestPutIDRejectsBadID(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	err := te.s.PutID(context.Background(), "../../etc/passwd", Envelope{To: []string{"b@example.net"}}, strings.NewReader("x\r\n"), nil)
	if !errors.Is(err, ErrInvalidID) {
		t.Fatalf("PutID with a path for an id = %v", err)
	}
}

type trackingReader struct {
	r   io.Reader
	eof bool
}

func (t *trackingReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err == io.EOF {
		t.eof = true
	}
	return n, err
}
