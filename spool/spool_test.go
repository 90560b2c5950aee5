package spool

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// patternReader yields n deterministic pseudo-random bytes without holding
// them, so the test can stream a large body and check it by hash.
type patternReader struct {
	rng *rand.ChaCha8
	n   int64
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.n {
		p = p[:r.n]
	}
	r.rng.Read(p)
	r.n -= int64(len(p))
	return len(p), nil
}

func newPattern(n int64) *patternReader {
	return &patternReader{rng: rand.NewChaCha8([32]byte{1, 2, 3}), n: n}
}

func TestPutRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		size int64
		env  Envelope
	}{
		{"empty body", 0, Envelope{From: "a@example.com", To: []string{"b@example.org"}}},
		{"small", 100, Envelope{From: "", To: []string{"b@example.org", "c@example.org"}, SMTPUTF8: true}},
		{"provenance", 4096, Envelope{
			From: "cron@host.example.com", To: []string{"ops@example.com"},
			ClientAddr: "127.0.0.1:51234", AuthUser: "cron", LocalUser: "uid=0(root)",
			MessageID: "<x@host>", TLS: "TLS1.3",
			Received: time.Date(2026, 11, 27, 12, 0, 0, 0, time.FixedZone("CET", 3600)),
		}},
		{"5 MiB streamed", 5 << 20, Envelope{From: "a@example.com", To: []string{"b@example.org"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			te := newTestEnv(t, Options{})
			want := sha256.New()
			id, err := te.s.Put(context.Background(), tt.env, io.TeeReader(newPattern(tt.size), want))
			if err != nil {
				t.Fatalf("Put: %v", err)
			}

			m, err := te.s.Get(id)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if m.ID != id || m.Size != tt.size || m.Attempts != 0 {
				t.Errorf("Get = id %q size %d attempts %d; want %q %d 0", m.ID, m.Size, m.Attempts, id, tt.size)
			}
			if !m.Created.Equal(te.clock.Now()) || !m.NextAttempt.Equal(te.clock.Now()) {
				t.Errorf("Created %v NextAttempt %v, want both %v", m.Created, m.NextAttempt, te.clock.Now())
			}
			wantEnv := tt.env
			if wantEnv.Received.IsZero() {
				wantEnv.Received = te.clock.Now()
			}
			if m.Envelope.From != wantEnv.From || !slices.Equal(m.Envelope.To, wantEnv.To) ||
				m.Envelope.SMTPUTF8 != wantEnv.SMTPUTF8 || m.Envelope.ClientAddr != wantEnv.ClientAddr ||
				m.Envelope.AuthUser != wantEnv.AuthUser || m.Envelope.LocalUser != wantEnv.LocalUser ||
				m.Envelope.MessageID != wantEnv.MessageID || m.Envelope.TLS != wantEnv.TLS ||
				!m.Envelope.Received.Equal(wantEnv.Received) {
				t.Errorf("envelope = %+v, want %+v", m.Envelope, wantEnv)
			}
			if len(m.Rcpts) != len(tt.env.To) {
				t.Fatalf("rcpts = %+v", m.Rcpts)
			}
			for i, r := range m.Rcpts {
				if r.Addr != tt.env.To[i] || r.State != Pending {
					t.Errorf("rcpt %d = %+v", i, r)
				}
			}

			rc, err := te.s.OpenBody(id)
			if err != nil {
				t.Fatalf("OpenBody: %v", err)
			}
			got := sha256.New()
			n, err := io.Copy(got, rc)
			rc.Close()
			if err != nil || n != tt.size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
				t.Errorf("body: %d bytes, err %v, hash match %v; want %d bytes", n, err, bytes.Equal(got.Sum(nil), want.Sum(nil)), tt.size)
			}

			list, err := te.s.List()
			if err != nil || len(list) != 1 || list[0].ID != id {
				t.Errorf("List = %v, %v; want [%s]", list, err, id)
			}
			if tmp := files(t, te.dir, dirTmp); len(tmp) != 0 {
				t.Errorf("tmp/ not empty after Put: %v", tmp)
			}
		})
	}
}

func TestListSorted(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	var want []ID
	for i := range 5 {
		want = append(want, put(t, te.s, "x", "a@example.com"))
		te.clock.Advance(time.Duration(i+1) * time.Second)
	}
	list, err := te.s.List()
	if err != nil {
		t.Fatal(err)
	}
	var got []ID
	for _, m := range list {
		got = append(got, m.ID)
	}
	if !slices.Equal(got, want) {
		t.Errorf("List order %v, want %v", got, want)
	}
}

func TestPutRejects(t *testing.T) {
	t.Parallel()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		env  Envelope
		body io.Reader
	}{
		{"no recipients", context.Background(), Envelope{From: "a@example.com"}, strings.NewReader("x")},
		{"cancelled before", cancelled, Envelope{To: []string{"a@example.com"}}, strings.NewReader("x")},
		{"body read error", context.Background(), Envelope{To: []string{"a@example.com"}}, io.MultiReader(strings.NewReader("partial"), errReader{})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			te := newTestEnv(t, Options{})
			if id, err := te.s.Put(tt.ctx, tt.env, tt.body); err == nil {
				t.Fatalf("Put = %q, nil; want error", id)
			}
			assertEmptySpool(t, te.dir)
		})
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errBoom }

// cancelReader cancels its context after the first read: the client went
// away in the middle of DATA.
type cancelReader struct {
	cancel context.CancelFunc
	r      io.Reader
}

func (c cancelReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.cancel()
	return n, err
}

func TestPutCancelledMidBody(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := te.s.Put(ctx, Envelope{To: []string{"a@example.com"}}, cancelReader{cancel, newPattern(1 << 20)})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Put = %v, want context.Canceled", err)
	}
	assertEmptySpool(t, te.dir)
}

// assertEmptySpool checks that nothing is queued or half written.
func assertEmptySpool(t *testing.T, dir string) {
	t.Helper()
	for _, sub := range []string{dirTmp, dirBody, dirQueue} {
		if names := files(t, dir, sub); len(names) != 0 {
			t.Errorf("%s/ not empty: %v", sub, names)
		}
	}
}

func TestGetAndOpenBodyRejectBadIDs(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	// A file that a path-traversing ID would reach, if it got that far.
	if err := os.WriteFile(filepath.Join(te.dir, "secret.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []ID{"../secret", "../../etc/passwd", "", "20261127T111500-abcdefgh2/"} {
		if _, err := te.s.Get(bad); !errors.Is(err, ErrInvalidID) {
			t.Errorf("Get(%q) = %v, want ErrInvalidID", bad, err)
		}
		if _, err := te.s.OpenBody(bad); !errors.Is(err, ErrInvalidID) {
			t.Errorf("OpenBody(%q) = %v, want ErrInvalidID", bad, err)
		}
		if err := te.s.Delete(bad); !errors.Is(err, ErrInvalidID) {
			t.Errorf("Delete(%q) = %v, want ErrInvalidID", bad, err)
		}
	}
	missing := ID("20261127T111500-abcdefgh23")
	if _, err := te.s.Get(missing); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(missing) = %v, want ErrNotFound", err)
	}
	if _, err := te.s.OpenBody(missing); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenBody(missing) = %v, want ErrNotFound", err)
	}
	if err := te.s.Delete(missing); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete(missing) = %v, want ErrNotFound", err)
	}
}

func TestDelete(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	id := put(t, te.s, "hello", "a@example.com")
	keep := put(t, te.s, "other", "b@example.com")
	if err := te.s.Delete(id); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	te.ev.wait(t, EventDeleted, id)
	if _, err := te.s.Get(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete = %v, want ErrNotFound", err)
	}
	if _, err := te.s.OpenBody(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenBody after Delete = %v, want ErrNotFound", err)
	}
	// The deleted message is not delivered; the other one is.
	d := &deliverer{}
	run(t, te.s, d)
	te.ev.wait(t, EventDelivered, keep)
	for _, c := range d.Calls() {
		if c.body == "hello" {
			t.Errorf("deleted message delivered")
		}
	}
}

func TestOpenLocks(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	if _, err := Open(te.dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	if err := te.s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := te.s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := te.s.Put(context.Background(), Envelope{To: []string{"a@x"}}, strings.NewReader("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Put after Close = %v, want ErrClosed", err)
	}
	s2, err := Open(te.dir, Options{})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s2.Close()
}

func TestOpenCreatesPrivateDirs(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "a", "spool")
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, sub := range []string{"", dirTmp, dirBody, dirQueue, dirFailed, dirCorrupt} {
		fi, err := os.Stat(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s/ has mode %v, want no group/other access", sub, perm)
		}
	}
	id := put(t, s, "x", "a@example.com")
	for _, p := range []string{filepath.Join(dir, dirBody, string(id)+extBody)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s has mode %v, want 0600", p, perm)
		}
	}
}

func TestOpenOptionsValidated(t *testing.T) {
	t.Parallel()
	for _, o := range []Options{{MaxAge: -time.Second}, {Backoff: []time.Duration{time.Minute, 0}}} {
		if s, err := Open(t.TempDir(), o); err == nil {
			s.Close()
			t.Errorf("Open(%+v) succeeded", o)
		}
	}
}

func TestReadOnly(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	id := put(t, te.s, "hello", "a@example.com")

	// The server holds the lock; a read-only view still works.
	ro, err := Open(te.dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("Open ReadOnly: %v", err)
	}
	defer ro.Close()
	list, err := ro.List()
	if err != nil || len(list) != 1 || list[0].ID != id {
		t.Fatalf("List = %v, %v", list, err)
	}
	if got := readBody(t, ro, id); string(got) != "hello" {
		t.Errorf("body %q", got)
	}
	if _, err := ro.Put(context.Background(), Envelope{To: []string{"a@x"}}, strings.NewReader("x")); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Put = %v, want ErrReadOnly", err)
	}
	if err := ro.Delete(id); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Delete = %v, want ErrReadOnly", err)
	}
	if err := ro.Run(context.Background(), &deliverer{}); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Run = %v, want ErrReadOnly", err)
	}
	if _, err := Open(filepath.Join(te.dir, "nope"), Options{ReadOnly: true}); err == nil {
		t.Errorf("Open ReadOnly of a missing spool succeeded")
	}
}

// TestOpenLockedByOtherProcess re-runs the test binary as a second process
// that tries to open a spool this one holds.
func TestOpenLockedByOtherProcess(t *testing.T) {
	if dir := os.Getenv("SEALPOST_SPOOL_LOCK_HELPER"); dir != "" {
		s, err := Open(dir, Options{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		s.Close()
		os.Exit(0)
	}
	t.Parallel()
	te := newTestEnv(t, Options{})
	cmd := exec.Command(os.Args[0], "-test.run=^TestOpenLockedByOtherProcess$")
	cmd.Env = append(os.Environ(), "SEALPOST_SPOOL_LOCK_HELPER="+te.dir)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(string(out), "locked by another process") {
		t.Fatalf("second process: %v, output %q; want a clear lock error", err, out)
	}
	te.s.Close()
	cmd = exec.Command(os.Args[0], "-test.run=^TestOpenLockedByOtherProcess$")
	cmd.Env = append(os.Environ(), "SEALPOST_SPOOL_LOCK_HELPER="+te.dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("after Close, second process: %v, %s", err, out)
	}
}

func TestStats(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	if n, oldest := te.s.Stats(); n != 0 || !oldest.IsZero() {
		t.Fatalf("empty spool: %d, %v", n, oldest)
	}
	first := put(t, te.s, "a", "a@x")
	te.clock.Advance(time.Hour)
	put(t, te.s, "b", "b@x")
	n, oldest := te.s.Stats()
	if n != 2 || !oldest.Equal(first.Time()) {
		t.Errorf("Stats = %d, %v; want 2, %v", n, oldest, first.Time())
	}
}
