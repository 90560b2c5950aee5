package spool

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

type writeCounter struct {
	bytes.Buffer
	writes int
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

// TestCopyFullFillsBuffer: a message that arrives in many small reads (the
// header, then the body line by line) is written in buffer-sized pieces,
// one write for a small message, and byte for byte.
func TestCopyFullFillsBuffer(t *testing.T) {
	head := "From: <a@example.com>\r\nSubject: x\r\n\r\n"
	body := strings.Repeat("a line of the body\r\n", 200) // 4000 bytes
	buf := make([]byte, 32<<10)
	for _, tt := range []struct {
		name   string
		src    io.Reader
		want   string
		writes int
	}{
		{"small, many reads", iotest.OneByteReader(io.MultiReader(strings.NewReader(head), strings.NewReader(body))), head + body, 1},
		{"three buffers", strings.NewReader(strings.Repeat("x", 3*len(buf)-1)), strings.Repeat("x", 3*len(buf)-1), 3},
		{"empty", strings.NewReader(""), "", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var w writeCounter
			n, err := copyFull(&w, tt.src, buf)
			if err != nil || n != int64(len(tt.want)) || w.String() != tt.want {
				t.Fatalf("copyFull = %d, %v; wrote %d bytes, want %d", n, err, w.Len(), len(tt.want))
			}
			if w.writes != tt.writes {
				t.Errorf("%d writes, want %d", w.writes, tt.writes)
			}
		})
	}

	// A reader's error stops the copy and is returned; io.ErrUnexpectedEOF
	// (the client hung up before the end of the data) is an error too, not
	// the end of the message.
	for _, cause := range []error{context.Canceled, io.ErrUnexpectedEOF} {
		var w writeCounter
		_, err := copyFull(&w, io.MultiReader(strings.NewReader(head), iotest.ErrReader(cause)), buf)
		if !errors.Is(err, cause) {
			t.Errorf("copyFull with a reader failing with %v = %v; want that error", cause, err)
		}
	}
}

// TestPutTruncatedBody: a body that ends with io.ErrUnexpectedEOF (the
// client hung up before the final dot) is not a message: Put fails and
// nothing is queued.
func TestPutTruncatedBody(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	body := io.MultiReader(strings.NewReader("Subject: cut\r\n\r\nhalf of it"), iotest.ErrReader(io.ErrUnexpectedEOF))
	if id, err := te.s.Put(context.Background(), Envelope{To: []string{"a@x"}}, body); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Put = %q, %v; want io.ErrUnexpectedEOF", id, err)
	}
	if list, err := te.s.List(); err != nil || len(list) != 0 {
		t.Errorf("List = %d messages, %v; want none", len(list), err)
	}
	assertEmptySpool(t, te.dir)
}
