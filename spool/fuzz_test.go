package spool

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// FuzzDecodeMessage: metadata on disk may be damaged in any way; decoding
// must never panic, and whatever it accepts must survive a round trip
// unchanged (so a rewrite after an attempt does not alter it).
func FuzzDecodeMessage(f *testing.F) {
	now := time.Date(2026, 11, 27, 11, 15, 0, 0, time.UTC)
	good := &Message{
		ID:       "20261127T111500-abcdefgh23",
		Envelope: Envelope{From: "a@example.com", To: []string{"b@example.org", "ü@example.org"}, SMTPUTF8: true, TLS: "TLS1.3", Received: now},
		Size:     42,
		Rcpts: []Rcpt{
			{Addr: "b@example.org", State: Delivered},
			{Addr: "ü@example.org", State: Pending, LastReply: "451 later"},
		},
		Attempts: 2, NextAttempt: now.Add(5 * time.Minute), LastError: "451 later", Created: now,
	}
	b, err := encodeMessage(good)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	signed := *good
	signed.Header, signed.Size = "DKIM-Signature: v=1; b=c2ln\r\n", 72
	if b, err = encodeMessage(&signed); err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"ID":"../../etc/passwd","Rcpts":[{"Addr":"a","State":"pending"}]}`))
	f.Add([]byte(`{"ID":"20261127T111500-abcdefgh23","Rcpts":[{"Addr":"a","State":"sent"}]}`))
	f.Add([]byte(`{"ID":"20261127T111500-abcdefgh23","Size":-1,"Rcpts":[{"Addr":"a","State":"pending"}]}`))
	f.Add([]byte(`{"ID":"20261127T111500-abcdefgh23","Rcpts":[{"Addr":"a","State":"pending"}],"NextAttempt":"not a time"}`))
	f.Add(b[:len(b)/2])

	f.Add([]byte(`{"ID":"20261127T111500-abcdefgh23","Size":3,"Header":"a\ud800\udc00\ud800b\u00e9\n","Rcpts":[{"Addr":"a","State":"pending"}]}`))
	f.Add([]byte("{\"ID\":\"20261127T111500-abcdefgh23\",\"Size\":5,\"Header\":\"\xff\xe9\",\"Rcpts\":[{\"Addr\":\"a\",\"State\":\"pending\"}]}"))
	f.Add([]byte(`{"ID":"20261127T111500-abcdefgh23","Header":5,"Rcpts":[{"Addr":"a","State":"pending"}]}`))

	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeMessage(data, "")
		// A listing shows what delivery would read, but the Header: it
		// accepts exactly what delivery accepts.
		listed, listErr := decodeListing(data, "")
		if (err == nil) != (listErr == nil) {
			t.Fatalf("decodeMessage: %v; decodeListing: %v", err, listErr)
		}
		if err != nil {
			return
		}
		if _, err := ParseID(string(m.ID)); err != nil {
			t.Fatalf("accepted invalid id %q", m.ID)
		}
		whole := *m
		whole.Header = ""
		if !reflect.DeepEqual(*listed, whole) {
			t.Fatalf("listed as %+v, decoded as %+v", *listed, whole)
		}
		enc1, err := encodeMessage(m)
		if err != nil {
			// Accepted input that cannot be written back (e.g. a year
			// beyond 9999): the spool would fail to record the next
			// attempt and retry; tolerable, but make it visible.
			t.Skipf("decoded but cannot re-encode: %v", err)
		}
		m2, err := decodeMessage(enc1, m.ID)
		if err != nil {
			t.Fatalf("re-encoded metadata does not decode: %v\n%s", err, enc1)
		}
		enc2, err := encodeMessage(m2)
		if err != nil || !bytes.Equal(enc1, enc2) {
			t.Fatalf("round trip changed the metadata:\n%s\n%s", enc1, enc2)
		}
	})
}

// FuzzUnquotedLen: for every JSON string, unquotedLen gives the length of
// what encoding/json decodes, invalid UTF-8 and lone surrogates included.
func FuzzUnquotedLen(f *testing.F) {
	for _, seed := range []string{``, `abc`, `\r\n\t\"\\\/\b\f`, `\u00e9\u20ac\ud83d\ude00`, `\ud800`, `\udc00\ud800x`,
		`\ud800\u0041`, `\ud800\ud800\udc00`, "\xff\xfe", "é€😀", "\xed\xa0\x80", `\u0000`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, inner []byte) {
		quoted := append(append([]byte{'"'}, inner...), '"')
		var s string
		if json.Unmarshal(quoted, &s) != nil {
			return // not a JSON string: the scanner refuses it before unquotedLen
		}
		if n, ok := unquotedLen(quoted); !ok || n != len(s) {
			t.Fatalf("unquotedLen(%q) = %d, %v; encoding/json decodes %d bytes", quoted, n, ok, len(s))
		}
	})
}

// FuzzParseTrailer: whatever the end of a body file holds (a crash can
// leave anything there), parseTrailer never panics, asks for no more than
// the file has, and accepts metadata only under a footer that matches it.
func FuzzParseTrailer(f *testing.F) {
	meta := []byte(`{"ID":"20261127T111500-abcdefghij"}` + "\n")
	whole := appendTrailer([]byte("Subject: x\r\n\r\nbody\r\n"), meta)
	f.Add(whole, int64(0))
	f.Add(whole[:len(whole)-1], int64(0))
	f.Add(whole[len(whole)-footerSize:], int64(len(whole)))
	f.Add([]byte(trailerMagic+"\xff\xff\xff\xff\x00\x00\x00\x00"), int64(1<<40))
	f.Fuzz(func(t *testing.T, tail []byte, extra int64) {
		if extra < 0 || extra > 1<<40 {
			return
		}
		size := int64(len(tail)) + extra // tail is the end of a larger file
		data, state, need := parseTrailer(tail, size)
		if need > size || (need > 0 && need <= int64(len(tail))) {
			t.Fatalf("asks for %d bytes of a %d-byte file, %d given", need, size, len(tail))
		}
		if state == trailerOK && need == 0 {
			again := appendTrailer(nil, data)
			if !bytes.HasSuffix(tail, again) {
				t.Fatalf("accepted metadata %q that its footer does not describe", data)
			}
		}
	})
}
