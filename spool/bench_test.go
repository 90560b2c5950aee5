package spool

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"testing"
	"time"
)

func benchSpool(b *testing.B) *Spool { return benchSpoolWith(b, Options{}) }

func benchSpoolWith(b *testing.B, opts Options) *Spool {
	s, err := Open(b.TempDir(), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkPut measures one durable Put of a 4 KiB message: mostly fsyncs,
// so run it on the file system the spool will live on.
func BenchmarkPut(b *testing.B) { benchmarkPut(b, benchSpool(b)) }

// BenchmarkPutReady is BenchmarkPut into files made ready ahead (as the
// relay runs the spool): one fsync per Put, and one of body/ per batch,
// made in the background.
func BenchmarkPutReady(b *testing.B) {
	benchmarkPut(b, benchSpoolWith(b, Options{ReadyFiles: 32}))
}

func benchmarkPut(b *testing.B, s *Spool) {
	body := bytes.Repeat([]byte("x"), 4<<10)
	env := Envelope{From: "a@example.com", To: []string{"b@example.org"}}
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := s.Put(context.Background(), env, bytes.NewReader(body)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPutSigned is BenchmarkPut with a header that costs what the
// relay's does, an RSA-2048 signature: Put overlaps that CPU with the disk.
func BenchmarkPutSigned(b *testing.B) {
	s := benchSpool(b)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	body := bytes.Repeat([]byte("x"), 4<<10)
	env := Envelope{From: "a@example.com", To: []string{"b@example.org"}}
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		id := s.NewID()
		header := func() ([]byte, error) {
			digest := sha256.Sum256(body)
			sig, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, digest[:])
			return []byte("X-Signature: " + base64.StdEncoding.EncodeToString(sig) + "\r\n"), err
		}
		if err := s.PutID(context.Background(), id, env, bytes.NewReader(body), header); err != nil {
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

// BenchmarkStats100k: the metrics scrape and control replies count the
// queue under the lock Put needs, here with 100,000 queued messages.
func BenchmarkStats100k(b *testing.B) {
	s := benchSpool(b)
	start := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	s.mu.Lock()
	for i := range 100_000 {
		id := newID(start.Add(time.Duration(i) * time.Second))
		s.items[id] = &item{id: id, index: -1}
	}
	s.mu.Unlock()
	for b.Loop() {
		if n, _ := s.Stats(); n != 100_000 {
			b.Fatal(n)
		}
	}
}
