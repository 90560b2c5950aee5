package policy

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// refLineCheck is the byte-at-a-time definition NewLineChecker must agree
// with: the offset of the byte at which the violation becomes evident (the
// byte after a bare CR, or EOF), the rule and its line; ok when clean.
func refLineCheck(b []byte) (at int, rule string, line int, ok bool) {
	line = 1
	for i := 0; i < len(b); i++ {
		if i > 0 && b[i-1] == '\r' && b[i] != '\n' {
			return i, RuleBareCR, line, false
		}
		switch b[i] {
		case 0:
			return i, RuleNULByte, line, false
		case '\n':
			if i == 0 || b[i-1] != '\r' {
				return i, RuleBareLF, line, false
			}
			line++
		}
	}
	if len(b) > 0 && b[len(b)-1] == '\r' {
		return len(b), RuleBareCR, line, false
	}
	return len(b), "", 0, true
}

// chunkReader returns its data in reads of the given sizes, cycling, so a
// test can put Read boundaries anywhere (in particular between CR and LF).
type chunkReader struct {
	data  []byte
	sizes []int
	n     int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	size := len(c.data)
	if len(c.sizes) > 0 {
		size = max(c.sizes[c.n%len(c.sizes)], 1)
		c.n++
	}
	size = min(size, len(p), len(c.data))
	copy(p, c.data[:size])
	c.data = c.data[size:]
	return size, nil
}

// runLineChecker reads everything through a line checker and returns what
// came out and the error that ended it (nil at a clean EOF).
func runLineChecker(t testing.TB, r io.Reader) ([]byte, error) {
	t.Helper()
	var out bytes.Buffer
	_, err := io.Copy(&out, NewLineChecker(r))
	return out.Bytes(), err
}

func checkAgainstRef(t testing.TB, in []byte, out []byte, err error) {
	t.Helper()
	at, rule, line, ok := refLineCheck(in)
	if !bytes.Equal(out, in[:at]) {
		t.Fatalf("input %q: passed %q, want %q", in, out, in[:at])
	}
	if ok {
		if err != nil {
			t.Fatalf("input %q: error %v, want none", in, err)
		}
		return
	}
	var v *Violation
	if !errors.As(err, &v) {
		t.Fatalf("input %q: error %v, want a violation %s", in, err, rule)
	}
	if v.Rule != rule || v.Line != line {
		t.Fatalf("input %q: got %s line %d, want %s line %d", in, v.Rule, v.Line, rule, line)
	}
}

func TestLineChecker(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		rule string
		line int
	}{
		{"", "", 0},
		{"a\r\nb\r\n", "", 0},
		{"no newline at all", "", 0},
		{"\r\n\r\n", "", 0},
		{"a\nb", RuleBareLF, 1},
		{"\n", RuleBareLF, 1},
		{"a\r\nb\r\nc\n", RuleBareLF, 3},
		{"a\r\n\n", RuleBareLF, 2},
		{"a\rb\r\n", RuleBareCR, 1},
		{"a\r", RuleBareCR, 1},
		{"a\r\r\n", RuleBareCR, 1},
		{"a\r\n\r", RuleBareCR, 2},
		{"a\x00\r\n", RuleNULByte, 1},
		{"a\r\n\x00", RuleNULByte, 2},
		{"a\r\x00", RuleBareCR, 1}, // the bare CR comes first
		{"hi\n.\r\nMAIL FROM:<x@y>\r\n", RuleBareLF, 1},
		{"hi\r\n.\nMAIL FROM:<x@y>\r\n", RuleBareLF, 2},
		{"hi\n.\nMAIL FROM:<x@y>\r\n", RuleBareLF, 1},
		{"hi\r.\r\nMAIL FROM:<x@y>\r\n", RuleBareCR, 1},
	} {
		in := []byte(tc.in)
		// Every way of splitting the input into reads of one size, plus
		// reads of one byte through iotest.
		for size := 1; size <= len(in)+1; size++ {
			out, err := runLineChecker(t, &chunkReader{data: in, sizes: []int{size}})
			checkAgainstRef(t, in, out, err)
			var v *Violation
			if tc.rule == "" && err != nil || tc.rule != "" && (!errors.As(err, &v) || v.Rule != tc.rule || v.Line != tc.line) {
				t.Fatalf("%q in reads of %d: %v, want %s at line %d", tc.in, size, err, tc.rule, tc.line)
			}
		}
		out, err := runLineChecker(t, iotest.OneByteReader(bytes.NewReader(in)))
		checkAgainstRef(t, in, out, err)
		out, err = runLineChecker(t, iotest.DataErrReader(bytes.NewReader(in)))
		checkAgainstRef(t, in, out, err)
	}
}

func TestLineCheckerStickyAndUnwrapped(t *testing.T) {
	t.Parallel()
	r := NewLineChecker(strings.NewReader("a\nb\r\n"))
	buf := make([]byte, 10)
	n, err := r.Read(buf)
	if n != 1 {
		t.Fatalf("first read passed %d bytes, want 1", n)
	}
	v, ok := err.(*Violation) // relay may type-assert, as go-smtp does
	if !ok || v.Rule != RuleBareLF {
		t.Fatalf("err = %#v, want *Violation bare-lf", err)
	}
	if n, err2 := r.Read(buf); n != 0 || err2 != err {
		t.Fatalf("second read: %d, %v; want 0 and the same violation", n, err2)
	}
}

func TestLineCheckerPassesReadErrors(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	_, err := runLineChecker(t, io.MultiReader(strings.NewReader("a\r\n"), iotest.ErrReader(boom)))
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
}
