package policy

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// addFixtureSeeds seeds a fuzz target with every message in the corpus.
func addFixtureSeeds(f *testing.F, add func(data []byte)) {
	f.Helper()
	for _, fx := range readIndex(f) {
		data, err := os.ReadFile(filepath.Join(messagesDir, fx.file))
		if err != nil {
			f.Fatal(err)
		}
		add(data)
	}
}

func FuzzReadHeader(f *testing.F) {
	addFixtureSeeds(f, func(data []byte) {
		f.Add(data, false, uint16(0))
		f.Add(data, true, uint16(16))
	})
	f.Fuzz(func(t *testing.T, data []byte, smtputf8 bool, bufSize uint16) {
		src := bytes.NewReader(data)
		br := bufio.NewReaderSize(src, int(bufSize)) // below 16 means 16
		h, err := ReadHeader(br, HeaderOptions{SMTPUTF8: smtputf8, MaxHeaderBytes: 64 << 10})
		if err != nil {
			var v *Violation
			if !errors.As(err, &v) {
				t.Fatalf("non-violation error from an in-memory reader: %v", err)
			}
			return
		}
		consumed := data[:len(data)-src.Len()-br.Buffered()]
		var out bytes.Buffer
		if _, err := h.WriteTo(&out); err != nil {
			t.Fatal(err)
		}
		want := consumed
		// A header that ended at EOF gets the empty line that ends it.
		if len(consumed) != 2 && !bytes.HasSuffix(consumed, []byte("\r\n\r\n")) {
			want = append(bytes.Clone(consumed), "\r\n"...)
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("WriteTo does not reproduce the header:\n got %q\nwant %q", out.Bytes(), want)
		}
		for _, fl := range h.Fields {
			if len(fl.Raw) < len(fl.Name)+3 || string(fl.Raw[:len(fl.Name)]) != fl.Name || fl.Raw[len(fl.Name)] != ':' {
				t.Fatalf("field %q has Raw %q", fl.Name, fl.Raw)
			}
			if !smtputf8 && !isASCII(fl.Value()) {
				t.Fatalf("8-bit value %q accepted without SMTPUTF8", fl.Value())
			}
			if smtputf8 && !utf8.ValidString(fl.Value()) {
				t.Fatalf("invalid UTF-8 value %q accepted", fl.Value())
			}
			if strings.ContainsAny(fl.Value(), "\r\n\x00") {
				t.Fatalf("unfolded value %q holds CR, LF or NUL", fl.Value())
			}
		}
		// The checks on top must not panic either.
		_ = CheckHeader(h)
		_, _ = FromAddresses(h)
		_ = SenderRules{SigningDomains: []string{"example.com"}}.CheckFromDomains(h)
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func FuzzLineChecker(f *testing.F) {
	addFixtureSeeds(f, func(data []byte) { f.Add(data, []byte{7, 1, 64}) })
	for _, s := range []string{"\n.\r\n", "\r\n.\n", "\n.\n", "\r.\r\n", "a\r", "\r\r\n", "\x00"} {
		f.Add([]byte("hi"+s+"MAIL FROM:<x@y>\r\n"), []byte{1})
	}
	f.Fuzz(func(t *testing.T, data []byte, sizes []byte) {
		var sz []int
		for _, s := range sizes {
			sz = append(sz, int(s))
		}
		out, err := runLineChecker(t, &chunkReader{data: data, sizes: sz})
		checkAgainstRef(t, data, out, err)
	})
}

func FuzzCheckEnvelopeAddress(f *testing.F) {
	for _, s := range []string{"", "cron@app01.example.com", `"a b"@example.com`, "u@[IPv6:2001:db8::1]", "u@[192.0.2.1]",
		"jöran@bücher.example", "a@b@c", "\"\\", "@a:b@c", "u@[IPv6:fe80::1%x]", "a..b@c"} {
		f.Add(s, false, false)
		f.Add(s, true, true)
	}
	f.Fuzz(func(t *testing.T, addr string, smtputf8, sender bool) {
		v := CheckEnvelopeAddress(addr, smtputf8, sender)
		local, domain, err := SplitAddress(addr)
		if v != nil {
			if v.Rule != RuleEnvelopeAddress {
				t.Fatalf("rule %s", v.Rule)
			}
			return
		}
		if strings.ContainsAny(addr, "\r\n\x00 \t") && !strings.HasPrefix(addr, `"`) {
			t.Fatalf("%q accepted", addr)
		}
		if strings.ContainsFunc(addr, isControl) {
			t.Fatalf("%q with a control character accepted", addr)
		}
		if !smtputf8 && !isASCII(addr) {
			t.Fatalf("8-bit %q accepted without SMTPUTF8", addr)
		}
		if len(addr) > 254 {
			t.Fatalf("%d-octet address accepted", len(addr))
		}
		if addr == "" {
			return
		}
		if err != nil {
			t.Fatalf("%q passes CheckEnvelopeAddress but not SplitAddress: %v", addr, err)
		}
		if len(local) > 64 || local+"@"+domain != addr[:len(local)+1]+strings.ToLower(addr[len(local)+1:]) {
			t.Fatalf("SplitAddress(%q) = %q, %q", addr, local, domain)
		}
		_ = (SenderRules{AllowedSenders: []string{"*@*.example.com", "x@y.example"}}).CheckEnvelopeSender(addr)
		_ = ValidatePattern(addr)
	})
}
