package spool

import (
	"bytes"
	"context"
	"testing"
)

func benchSpool(b *testing.B) *Spool {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkPut measures one durable Put of a 4 KiB message: mostly fsyncs,
// so run it on the file system the spool will live on.
func BenchmarkPut(b *testing.B) {
	s := benchSpool(b)
	body := bytes.Repeat([]byte("x"), 4<<10)
	env := Envelope{From: "a@example.com", To: []string{"b@example.org"}}
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := s.Put(context.Background(), env, bytes.NewReader(body)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPutParallel shows what group commit buys: concurrent Puts share
// directory fsyncs.
func BenchmarkPutParallel(b *testing.B) {
	s := benchSpool(b)
	body := bytes.Repeat([]byte("x"), 4<<10)
	env := Envelope{From: "a@example.com", To: []string{"b@example.org"}}
	b.SetBytes(int64(len(body)))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Put(context.Background(), env, bytes.NewReader(body)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
