package policy

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
)

// benchMessage builds a plausible message of about size bytes: a dozen
// header fields as a mail client writes them, then 76-column body lines.
func benchMessage(size int) []byte {
	var b bytes.Buffer
	b.WriteString("Received: from app01.example.com (localhost [127.0.0.1])\r\n\tby app01.example.com with ESMTP id 4f1c; Thu, 27 Nov 2025 11:00:00 +0000\r\n")
	b.WriteString("From: Cron Daemon <cron@app01.example.com>\r\n")
	b.WriteString("To: Operations <ops@example.com>, dba@example.com\r\n")
	b.WriteString("Cc: =?utf-8?q?J=C3=B6ran_=C3=9Cberwachung?= <joeran@example.com>\r\n")
	b.WriteString("Subject: =?utf-8?q?Sicherung_l=C3=A4uft?= nightly backup report\r\n")
	b.WriteString("Date: Thu, 27 Nov 2025 11:00:00 +0000\r\n")
	b.WriteString("Message-ID: <20251127110000.4f1c@app01.example.com>\r\n")
	b.WriteString("MIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n")
	b.WriteString("Content-Transfer-Encoding: 8bit\r\n")
	b.WriteString("X-Cron-Env: <SHELL=/bin/sh>\r\n\r\n")
	line := strings.Repeat("0123456789", 7) + "abcdef\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.Bytes()
}

func benchCheckMessage(b *testing.B, size int) {
	msg := benchMessage(size)
	if _, err := checkMessage(bytes.NewReader(msg), false); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	r := bytes.NewReader(msg)
	for b.Loop() {
		r.Reset(msg)
		if _, err := checkMessage(r, false); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckMessage4KiB(b *testing.B) { benchCheckMessage(b, 4<<10) }
func BenchmarkCheckMessage1MiB(b *testing.B) { benchCheckMessage(b, 1<<20) }

// The line checker alone, so a regression can be told apart from the
// header checks.
func BenchmarkLineChecker1MiB(b *testing.B) {
	msg := benchMessage(1 << 20)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	r := bytes.NewReader(msg)
	buf := make([]byte, 32<<10)
	for b.Loop() {
		r.Reset(msg)
		if _, err := io.CopyBuffer(io.Discard, NewLineChecker(r), buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLimiterAllow(b *testing.B) {
	for _, keys := range []int{1, 1000, 200_000} {
		b.Run(fmt.Sprint(keys, "keys"), func(b *testing.B) {
			names := make([]string, keys)
			for i := range names {
				names[i] = fmt.Sprintf("sender%d@example.com", i)
			}
			l := NewLimiter(LimiterConfig{Rate: 1e9, Burst: 1000, MaxKeys: 100_000}, nil)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				l.Allow(names[i%keys])
				i++
			}
		})
	}
}
