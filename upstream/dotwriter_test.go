package upstream

import (
	"bufio"
	"bytes"
	"math/rand/v2"
	"net/textproto"
	"strings"
	"testing"
)

// stuff runs the pieces through a dotWriter, as io.CopyBuffer would.
func stuff(pieces ...string) string {
	var out bytes.Buffer
	bw := bufio.NewWriterSize(&out, 16) // small, so the writer's own flushes are exercised
	d := &dotWriter{w: bw}
	for _, p := range pieces {
		if n, err := d.Write([]byte(p)); n != len(p) || err != nil {
			panic("short write")
		}
	}
	d.Close()
	bw.Flush()
	return out.String()
}

// TestDotWriterMatchesTextproto: on bodies without a bare CR, split at
// random points, the output is byte for byte what textproto's DotWriter
// (go-smtp's DATA writer) sends.
func TestDotWriterMatchesTextproto(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	tokens := []string{".", "..", "a", "bc", "\r\n", "\n", ".\r\n", "\r\n.\r\n", "x.y"}
	for i := range 5000 {
		var b strings.Builder
		for range rng.IntN(40) {
			b.WriteString(tokens[rng.IntN(len(tokens))])
		}
		body := b.String()
		var pieces []string
		for rest := body; rest != ""; {
			n := 1 + rng.IntN(len(rest))
			pieces = append(pieces, rest[:n])
			rest = rest[n:]
		}

		var want bytes.Buffer
		tw := textproto.NewWriter(bufio.NewWriter(&want))
		dw := tw.DotWriter()
		dw.Write([]byte(body))
		dw.Close()

		if got := stuff(pieces...); got != want.String() {
			t.Fatalf("case %d: body %q in pieces %q\n got %q\nwant %q", i, body, pieces, got, want.String())
		}
	}
}

// TestDotWriterBareCR: a bare CR ends its line (it becomes CRLF), like a
// bare LF, so a dot after it is stuffed: "\r.\r\n" cannot end the data
// at a server that takes a bare CR for a line end.
func TestDotWriterBareCR(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		pieces []string
		want   string
	}{
		{[]string{"a\rb\r\n"}, "a\r\nb\r\n.\r\n"},
		{[]string{"a\r", "\r\n.b"}, "a\r\n\r\n..b\r\n.\r\n"},
		{[]string{"a\r", ".b\r\n"}, "a\r\n..b\r\n.\r\n"},
		{[]string{"x\r.\r\nMAIL FROM:<evil@example.com>\r\n"}, "x\r\n..\r\nMAIL FROM:<evil@example.com>\r\n.\r\n"},
		{[]string{"a\r"}, "a\r\n.\r\n"},
		{nil, "\r\n.\r\n"},
	} {
		if got := stuff(tt.pieces...); got != tt.want {
			t.Errorf("%q: got %q, want %q", tt.pieces, got, tt.want)
		}
	}
}
