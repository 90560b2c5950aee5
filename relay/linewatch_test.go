package relay

import (
	"bufio"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"sealpost/certs/certstest"
)

// bareReference says byte by byte whether data has a CR or LF that is not
// part of a CRLF. A CR at the very end is still waiting for its LF.
func bareReference(data []byte) bool {
	for i, c := range data {
		switch {
		case c == '\n' && (i == 0 || data[i-1] != '\r'):
			return true
		case c == '\r' && i+1 < len(data) && data[i+1] != '\n':
			return true
		}
	}
	return false
}

// TestLineEndingWatchMatchesReference feeds random CR/LF-heavy streams in
// random pieces and compares with the byte-by-byte reference.
func TestLineEndingWatchMatchesReference(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("ab\r\n.")
	for range 5000 {
		data := make([]byte, rng.IntN(40))
		for i := range data {
			data[i] = alphabet[rng.IntN(len(alphabet))]
		}
		var w lineEndingWatch
		for rest := data; len(rest) > 0; {
			n := 1 + rng.IntN(len(rest))
			w.scan(rest[:n])
			rest = rest[n:]
		}
		if got, want := w.bare.Load(), bareReference(data); got != want {
			t.Fatalf("%q: watch says bare=%v, reference %v", data, got, want)
		}
	}
}

// TestBDATBareLF: CHUNKING is advertised, and a bare LF sent with BDAT is
// refused like one sent with DATA (go-smtp then runs Data on a goroutine
// of its own, which is why the watch's flag is atomic).
func TestBDATBareLF(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	cfg := newTestConfig(t, ca, "127.0.0.1:1")
	env := startRelay(t, cfg, nil)
	c := dialRelay(t, env.addr)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	roundTrip := func(s string) string {
		if s != "" {
			c.Write([]byte(s))
		}
		var reply strings.Builder
		for {
			line, err := br.ReadString('\n')
			reply.WriteString(line)
			if err != nil || len(line) < 4 || line[3] != '-' {
				return reply.String()
			}
		}
	}
	roundTrip("")
	if r := roundTrip("EHLO client.test\r\n"); !strings.Contains(r, "CHUNKING") {
		t.Fatalf("EHLO: %q", r)
	}
	roundTrip("MAIL FROM:<app@example.com>\r\n")
	roundTrip("RCPT TO:<ops@example.net>\r\n")
	chunk := "From: app@example.com\r\nTo: ops@example.net\r\nSubject: s\r\n\r\nline one\nline two\r\n"
	got := roundTrip("BDAT " + strconv.Itoa(len(chunk)) + " LAST\r\n" + chunk)
	if !strings.HasPrefix(got, "554 5.6.0 ") {
		t.Errorf("BDAT with a bare LF: %q, want 554 5.6.0", got)
	}
	env.stop()
	assertQueueLen(t, cfg, 0)
}
