package policy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func readHeaderString(t testing.TB, s string, opts HeaderOptions) (*Header, error) {
	t.Helper()
	return ReadHeader(bufio.NewReader(strings.NewReader(s)), opts)
}

func wantViolation(t testing.TB, err error, rule string, line int) {
	t.Helper()
	var v *Violation
	if !errors.As(err, &v) {
		t.Fatalf("err = %v, want violation %s", err, rule)
	}
	if v.Rule != rule || v.Line != line {
		t.Fatalf("got %s line %d (%s), want %s line %d", v.Rule, v.Line, v.Msg, rule, line)
	}
}

func TestReadHeaderFields(t *testing.T) {
	t.Parallel()
	in := "From: a@example.com\r\n" +
		"Subject: one\r\n two\r\n\tthree  \r\n" +
		"X-Empty:\r\n" +
		"to:b@example.com\r\n" +
		"\r\n" +
		"body\r\n"
	br := bufio.NewReader(strings.NewReader(in))
	h, err := ReadHeader(br, HeaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name, value string
		line        int
	}{
		{"From", "a@example.com", 1},
		{"Subject", "one two\tthree", 2},
		{"X-Empty", "", 5},
		{"to", "b@example.com", 6},
	}
	if len(h.Fields) != len(want) {
		t.Fatalf("got %d fields, want %d", len(h.Fields), len(want))
	}
	for i, w := range want {
		f := h.Fields[i]
		if f.Name != w.name || f.Value() != w.value || f.Line != w.line {
			t.Errorf("field %d = %q %q line %d, want %q %q line %d", i, f.Name, f.Value(), f.Line, w.name, w.value, w.line)
		}
	}
	if got := string(h.Fields[1].Raw); got != "Subject: one\r\n two\r\n\tthree  \r\n" {
		t.Errorf("Raw = %q", got)
	}
	rest, _ := io.ReadAll(br)
	if string(rest) != "body\r\n" {
		t.Errorf("body left = %q", rest)
	}
	var out bytes.Buffer
	n, err := h.WriteTo(&out)
	if err != nil || n != int64(out.Len()) || out.String() != in[:len(in)-len("body\r\n")] {
		t.Errorf("WriteTo = %d, %v, %q", n, err, out.String())
	}
	if v, ok := h.Get("TO"); !ok || v != "b@example.com" {
		t.Errorf("Get(TO) = %q, %v", v, ok)
	}
	if _, ok := h.Get("Cc"); ok {
		t.Error("Get(Cc) found something")
	}
}

func TestReadHeaderRules(t *testing.T) {
	t.Parallel()
	long := "X: " + strings.Repeat("a", MaxLineOctets-3)
	for _, tc := range []struct {
		name, in string
		opts     HeaderOptions
		rule     string // "" for no error
		line     int
	}{
		{"empty input", "", HeaderOptions{}, "", 0},
		{"only the empty line", "\r\n", HeaderOptions{}, "", 0},
		{"only headers", "A: b\r\n", HeaderOptions{}, "", 0},
		{"998 octets", long + "\r\n\r\n", HeaderOptions{}, "", 0},
		{"999 octets", long + "a\r\n\r\n", HeaderOptions{}, RuleLineTooLong, 1},
		{"endless line", "X: " + strings.Repeat("a", 100000), HeaderOptions{}, RuleLineTooLong, 1},
		{"continuation first", " a: b\r\n", HeaderOptions{}, RuleHeaderContinuationFirst, 1},
		{"tab continuation first", "\ta: b\r\n", HeaderOptions{}, RuleHeaderContinuationFirst, 1},
		{"no colon", "A: b\r\nno colon\r\n", HeaderOptions{}, RuleHeaderSyntax, 2},
		{"empty name", "A: b\r\n: c\r\n", HeaderOptions{}, RuleHeaderSyntax, 2},
		{"space in name", "A b: c\r\n", HeaderOptions{}, RuleHeaderSyntax, 1},
		{"space before colon", "A : c\r\n", HeaderOptions{}, RuleHeaderSyntax, 1},
		{"DEL in name", "A\x7f: c\r\n", HeaderOptions{}, RuleHeaderSyntax, 1},
		{"blank continuation", "A: b\r\n \t \r\nBcc: x@y\r\n", HeaderOptions{}, RuleHeaderSyntax, 2},
		{"unterminated", "A: b", HeaderOptions{}, RuleHeaderSyntax, 1},
		{"bare LF", "A: b\n\r\n", HeaderOptions{}, RuleBareLF, 1},
		{"bare CR", "A: b\rc\r\n", HeaderOptions{}, RuleBareCR, 1},
		{"NUL", "A: b\x00\r\n", HeaderOptions{}, RuleNULByte, 1},
		{"8bit without SMTPUTF8", "A: b\r\nS: \xc3\xa9\r\n", HeaderOptions{}, Rule8BitHeader, 2},
		{"8bit name without SMTPUTF8", "\xc3\xa9: x\r\n", HeaderOptions{}, Rule8BitHeader, 1},
		{"UTF-8 with SMTPUTF8", "S: \xc3\xa9\r\n", HeaderOptions{SMTPUTF8: true}, "", 0},
		{"8bit name with SMTPUTF8", "\xc3\xa9: x\r\n", HeaderOptions{SMTPUTF8: true}, RuleHeaderSyntax, 1},
		{"Latin-1 with SMTPUTF8", "S: \xe9\r\n", HeaderOptions{SMTPUTF8: true}, Rule8BitHeader, 1},
		{"too big", "A: 12345\r\nB: 12345\r\n\r\n", HeaderOptions{MaxHeaderBytes: 15}, RuleHeaderTooBig, 2},
		{"just fits", "A: 12345\r\nB: 12345\r\n\r\n", HeaderOptions{MaxHeaderBytes: 22}, "", 0},
		{"blank line over the cap", "A: 12345\r\nB: 12345\r\n\r\n", HeaderOptions{MaxHeaderBytes: 21}, RuleHeaderTooBig, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := readHeaderString(t, tc.in, tc.opts)
			if tc.rule == "" {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				return
			}
			wantViolation(t, err, tc.rule, tc.line)
		})
	}
}

func TestReadHeaderDefaultCap(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	line := "X-Pad: " + strings.Repeat("p", 900) + "\r\n"
	for b.Len() <= DefaultMaxHeaderBytes {
		b.WriteString(line)
	}
	_, err := readHeaderString(t, b.String(), HeaderOptions{})
	wantViolation(t, err, RuleHeaderTooBig, DefaultMaxHeaderBytes/len(line)+1)
}

// A small bufio buffer splits lines across ReadSlice calls; the result
// must not change.
func TestReadHeaderSmallBuffer(t *testing.T) {
	t.Parallel()
	in := "Subject: " + strings.Repeat("word ", 150) + "\r\n folded\r\nFrom: a@b.example\r\n\r\nbody"
	h, err := ReadHeader(bufio.NewReaderSize(iotest.OneByteReader(strings.NewReader(in)), 16), HeaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	h.WriteTo(&out)
	if out.String() != in[:len(in)-len("body")] {
		t.Fatalf("round trip = %q", out.String())
	}
	long := "X: " + strings.Repeat("a", 2000) + "\r\n\r\n"
	_, err = ReadHeader(bufio.NewReaderSize(strings.NewReader(long), 16), HeaderOptions{})
	wantViolation(t, err, RuleLineTooLong, 1)
}

func TestReadHeaderReadError(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	_, err := ReadHeader(bufio.NewReader(io.MultiReader(strings.NewReader("A: b\r\n"), iotest.ErrReader(boom))), HeaderOptions{})
	var v *Violation
	if !errors.Is(err, boom) || errors.As(err, &v) {
		t.Fatalf("err = %v, want wrapped boom", err)
	}
}

func TestHeaderEdit(t *testing.T) {
	t.Parallel()
	h, err := readHeaderString(t, "From: a@example.com\r\nBcc: x@example.com\r\nTo: b@example.com\r\nbcc: y@example.com\r\n\r\n", HeaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Values("BCC"); len(got) != 2 || got[0] != "x@example.com" || got[1] != "y@example.com" {
		t.Fatalf("Values(BCC) = %q", got)
	}
	h.Del("Bcc")
	if h.Has("bcc") || len(h.Fields) != 2 {
		t.Fatalf("after Del: %d fields", len(h.Fields))
	}
	h.Add("Message-ID", "<1@app01.example.com>")
	h.Prepend("Received", "from localhost (127.0.0.1) by app01.example.com with ESMTP id 1; Thu, 27 Nov 2025 11:00:00 +0000")
	var out bytes.Buffer
	h.WriteTo(&out)
	want := "Received: from localhost (127.0.0.1) by app01.example.com with ESMTP id 1;\r\n Thu, 27 Nov 2025 11:00:00 +0000\r\n" +
		"From: a@example.com\r\nTo: b@example.com\r\nMessage-ID: <1@app01.example.com>\r\n\r\n"
	if out.String() != want {
		t.Fatalf("got\n%q\nwant\n%q", out.String(), want)
	}
	if h.Fields[0].Line != 0 || h.Fields[1].Line != 1 {
		t.Errorf("lines = %d, %d", h.Fields[0].Line, h.Fields[1].Line)
	}
	// What Add writes, ReadHeader reads back to the same value.
	h2, err := ReadHeader(bufio.NewReader(&out), HeaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := h2.Get("Received"); v != "from localhost (127.0.0.1) by app01.example.com with ESMTP id 1; Thu, 27 Nov 2025 11:00:00 +0000" {
		t.Errorf("Received read back as %q", v)
	}
}

func TestHeaderAddFolding(t *testing.T) {
	t.Parallel()
	words := strings.Repeat("lorem ipsum dolor ", 30)
	for _, tc := range []struct{ name, value string }{
		{"short", "hello"},
		{"empty", ""},
		{"long words", words},
		{"one huge word", strings.Repeat("x", 300)},
		{"huge word then words", strings.Repeat("x", 100) + " " + words},
		{"runs of blanks", "a" + strings.Repeat(" ", 100) + "b" + strings.Repeat("\t ", 60) + "c"},
		{"injection attempt", "hi\r\nBcc: spam@evil.example\r\n\r\nbody"},
		{"NUL", "a\x00b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var h Header
			h.Add("Subject", tc.value)
			raw := string(h.Fields[0].Raw)
			parsed, err := readHeaderString(t, raw+"\r\n", HeaderOptions{})
			if err != nil {
				t.Fatalf("Add wrote %q, which does not read back: %v", raw, err)
			}
			if len(parsed.Fields) != 1 {
				t.Fatalf("Add wrote %q: %d fields", raw, len(parsed.Fields))
			}
			want := strings.Trim(strings.NewReplacer("\r", " ", "\n", " ", "\x00", " ").Replace(tc.value), " \t")
			if got := parsed.Fields[0].Value(); got != want {
				t.Fatalf("value read back %q, want %q", got, want)
			}
			for l := range strings.SplitSeq(strings.TrimSuffix(raw, "\r\n"), "\r\n") {
				// A fold point is a blank after a non-blank byte of the value.
				body := strings.TrimLeft(strings.TrimPrefix(l, "Subject:"), " \t")
				if len(l) > foldColumn && strings.ContainsAny(body, " \t") {
					t.Errorf("line of %d bytes could have been folded: %q", len(l), l)
				}
			}
		})
	}
}

func TestHeaderAddPanicsOnBadName(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"", "A B", "A:B", "Ä"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Add(%q) did not panic", name)
				}
			}()
			var h Header
			h.Add(name, "x")
		}()
	}
}

func TestHeaderAppendDoesNotClobber(t *testing.T) {
	t.Parallel()
	h, err := readHeaderString(t, "A: 1\r\nB: 2\r\n\r\n", HeaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_ = append(h.Fields[0].Raw, "XXXX"...)
	if string(h.Fields[1].Raw) != "B: 2\r\n" {
		t.Fatalf("appending to one Raw changed the next: %q", h.Fields[1].Raw)
	}
}
