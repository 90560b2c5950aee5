package spool

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func metaJSON(t *testing.T, m *Message) string {
	t.Helper()
	b, err := encodeMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func testMessage(id ID, states ...RcptState) *Message {
	now := time.Date(2026, 11, 27, 11, 0, 0, 0, time.UTC)
	m := &Message{ID: id, Envelope: Envelope{From: "a@x", Received: now}, Created: now, NextAttempt: now}
	for i, st := range states {
		addr := string(rune('a'+i)) + "@y"
		m.Envelope.To = append(m.Envelope.To, addr)
		m.Rcpts = append(m.Rcpts, Rcpt{Addr: addr, State: st})
	}
	return m
}

// TestOpenRecovers crafts the states a crash (or a careless operator) can
// leave behind, reopens the spool and checks that each is cleaned up or
// quarantined, that none is delivered, and that a good message queued
// beside it still is.
func TestOpenRecovers(t *testing.T) {
	t.Parallel()
	const bad = ID("20261127T100000-badbadbadb")
	tests := []struct {
		name      string
		setup     func(t *testing.T, dir string)
		wantEvent string
		want      map[string][]string // subdirectory -> files after Open
	}{
		{
			name: "truncated temp body and metadata",
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, dirTmp, string(bad)+extBody), "Subject: half a mess")
				writeFile(t, filepath.Join(dir, dirTmp, string(bad)+extMeta), `{"ID":"2026`)
			},
			wantEvent: EventRemovedTemp,
		},
		{
			name: "complete temp files never renamed",
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, dirTmp, string(bad)+extBody), "Subject: x\r\n\r\nwhole\r\n")
				writeFile(t, filepath.Join(dir, dirTmp, string(bad)+extMeta), metaJSON(t, testMessage(bad, Pending)))
			},
			wantEvent: EventRemovedTemp,
		},
		{
			// Put writes the metadata under its final name: a crash during
			// that first write leaves it short. It was never acknowledged,
			// but damage looks the same, so it is kept, not deleted.
			name: "metadata cut short by a crash",
			setup: func(t *testing.T, dir string) {
				full := metaJSON(t, testMessage(bad, Pending))
				writeFile(t, filepath.Join(dir, dirQueue, string(bad)+extMeta), full[:len(full)/2])
				writeFile(t, filepath.Join(dir, dirBody, string(bad)+extBody), "Subject: x\r\n\r\nbody\r\n")
			},
			wantEvent: EventCorrupt,
			want:      map[string][]string{dirCorrupt: {string(bad) + extBody, string(bad) + extMeta}},
		},
		{
			name: "empty metadata",
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, dirQueue, string(bad)+extMeta), "")
				writeFile(t, filepath.Join(dir, dirBody, string(bad)+extBody), "Subject: x\r\n\r\nbody\r\n")
			},
			wantEvent: EventCorrupt,
			want:      map[string][]string{dirCorrupt: {string(bad) + extBody, string(bad) + extMeta}},
		},
		{
			name: "metadata cut short with a zero-filled tail",
			setup: func(t *testing.T, dir string) {
				full := metaJSON(t, testMessage(bad, Pending))
				writeFile(t, filepath.Join(dir, dirQueue, string(bad)+extMeta), full[:len(full)/3]+strings.Repeat("\x00", 200))
			},
			wantEvent: EventCorrupt,
			want:      map[string][]string{dirCorrupt: {string(bad) + extMeta}},
		},
		{
			name: "bad JSON",
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, dirQueue, string(bad)+extMeta), "{not json")
				writeFile(t, filepath.Join(dir, dirBody, string(bad)+extBody), "body")
			},
			wantEvent: EventCorrupt,
			want:      map[string][]string{dirCorrupt: {string(bad) + extBody, string(bad) + extMeta}},
		},
		{
			name: "unknown recipient state",
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, dirQueue, string(bad)+extMeta), metaJSON(t, testMessage(bad, "bounced")))
				writeFile(t, filepath.Join(dir, dirBody, string(bad)+extBody), "body")
			},
			wantEvent: EventCorrupt,
			want:      map[string][]string{dirCorrupt: {string(bad) + extBody, string(bad) + extMeta}},
		},
		{
			name: "metadata names another id",
			setup: func(t *testing.T, dir string) {
				other := testMessage("20261127T100000-otherotheo", Pending)
				writeFile(t, filepath.Join(dir, dirQueue, string(bad)+extMeta), metaJSON(t, other))
				writeFile(t, filepath.Join(dir, dirBody, string(bad)+extBody), "body")
			},
			wantEvent: EventCorrupt,
			want:      map[string][]string{dirCorrupt: {string(bad) + extBody, string(bad) + extMeta}},
		},
		{
			name: "unknown file name in queue",
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, dirQueue, "notes.txt"), "hello")
			},
			wantEvent: EventCorrupt,
			want:      map[string][]string{dirCorrupt: {"notes.txt"}},
		},
		{
			name: "metadata without body",
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, dirQueue, string(bad)+extMeta), metaJSON(t, testMessage(bad, Pending)))
			},
			wantEvent: EventCorrupt,
			want:      map[string][]string{dirCorrupt: {string(bad) + extMeta}},
		},
		{
			name: "interrupted move to failed",
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, dirQueue, string(bad)+extMeta), metaJSON(t, testMessage(bad, Failed)))
				writeFile(t, filepath.Join(dir, dirFailed, string(bad)+extBody), "body")
			},
			want: map[string][]string{dirFailed: {string(bad) + extBody, string(bad) + extMeta}},
		},
		{
			name: "finished but not moved (failed)",
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, dirQueue, string(bad)+extMeta), metaJSON(t, testMessage(bad, Delivered, Failed)))
				writeFile(t, filepath.Join(dir, dirBody, string(bad)+extBody), "body")
			},
			want: map[string][]string{dirFailed: {string(bad) + extBody, string(bad) + extMeta}},
		},
		{
			name: "finished but not removed (delivered)",
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, dirQueue, string(bad)+extMeta), metaJSON(t, testMessage(bad, Delivered, Delivered)))
				writeFile(t, filepath.Join(dir, dirBody, string(bad)+extBody), "body")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			te := newTestEnv(t, Options{})
			good := put(t, te.s, "good", "ok@x")
			if err := te.s.Close(); err != nil {
				t.Fatal(err)
			}
			tt.setup(t, te.dir)

			s := te.open(t, Options{})
			if tt.wantEvent != "" {
				if ev := te.ev.wait(t, tt.wantEvent, ""); ev.Kind == EventCorrupt && ev.Err == nil {
					t.Errorf("corrupt event without a reason: %+v", ev)
				}
			}
			// Open handled the damage synchronously; the queue holds only
			// the good message, so nothing else can ever be delivered.
			list, err := s.List()
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 1 || list[0].ID != good {
				t.Fatalf("queue after Open: %v, want only %s", list, good)
			}
			s.mu.Lock()
			_, hasGood := s.items[good]
			n := len(s.items)
			s.mu.Unlock()
			if n != 1 || !hasGood {
				t.Fatalf("scheduler holds %d items (good: %v), want only the good one", n, hasGood)
			}
			for _, sub := range []string{dirTmp, dirFailed, dirCorrupt} {
				if got := files(t, te.dir, sub); !slices.Equal(got, tt.want[sub]) {
					t.Errorf("%s/ = %v, want %v", sub, got, tt.want[sub])
				}
			}
			if got, want := files(t, te.dir, dirBody), []string{string(good) + extBody}; !slices.Equal(got, want) {
				t.Errorf("body/ = %v, want %v", got, want)
			}

			d := &deliverer{}
			run(t, s, d)
			te.ev.wait(t, EventDelivered, good)
			if calls := d.Calls(); len(calls) != 1 || calls[0].body != "good" {
				t.Errorf("delivered %+v, want only the good message", calls)
			}
		})
	}
}

func TestCorruptAtDeliveryTime(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		metaFile bool // rewritten once, as after a deferred attempt
	}{{"trailer", false}, {"metadata file", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			te := newTestEnv(t, Options{})
			id := put(t, te.s, "x", "a@x")
			if tc.metaFile {
				m, err := te.s.Get(id)
				if err != nil {
					t.Fatal(err)
				}
				if err := te.s.writeMeta(m, dirQueue, te.s.queueSync); err != nil {
					t.Fatal(err)
				}
			}
			// Queued by an earlier process: this one reads the metadata
			// from disk at delivery time (its own fresh messages it
			// delivers first from memory).
			te.s.Close()
			s := te.open(t, Options{})
			if err := s.waitRecovered(); err != nil {
				t.Fatal(err)
			}
			// Damaged after Open loaded it (a disk error, a stray editor).
			if tc.metaFile {
				writeFile(t, filepath.Join(te.dir, dirQueue, string(id)+extMeta), "garbage")
			} else {
				path, data := storedFile(t, te.dir, id)
				data[len("x")+5] ^= 0x01
				writeFile(t, path, string(data))
			}
			d := &deliverer{}
			run(t, s, d)
			ev := te.ev.wait(t, EventCorrupt, id)
			if !errors.Is(ev.Err, ErrCorrupt) {
				t.Errorf("event err %v, want ErrCorrupt", ev.Err)
			}
			if len(d.Calls()) != 0 {
				t.Errorf("corrupt message delivered")
			}
			want := 1
			if tc.metaFile {
				want = 2
			}
			if got := files(t, te.dir, dirCorrupt); len(got) != want {
				t.Errorf("corrupt/ = %v, want %d files", got, want)
			}
			assertEmptySpool(t, te.dir)
		})
	}
}

// TestPutDuringRecovery: Open returns before the earlier queue is loaded,
// and a message put meanwhile is neither taken for a leftover (its body is
// written before its metadata) nor lost; the old queue and the new message
// are all delivered.
func TestPutDuringRecovery(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	var old []ID
	for range 200 {
		old = append(old, put(t, te.s, "old", "a@x"))
	}
	if err := te.s.Close(); err != nil {
		t.Fatal(err)
	}
	orphan := newID(te.clock.Now())
	writeFile(t, filepath.Join(te.dir, dirBody, string(orphan)+extBody), "never committed")

	s := te.open(t, Options{})
	fresh := put(t, s, "fresh", "b@x")
	list, err := s.List() // waits for the recovery
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(old)+1 {
		t.Fatalf("queue after recovery: %d messages, want %d", len(list), len(old)+1)
	}
	d := &deliverer{}
	run(t, s, d)
	te.ev.wait(t, EventDelivered, fresh)
	for _, id := range old {
		te.ev.wait(t, EventDelivered, id)
	}
	// The orphan's trailer is read at its first attempt, which removes it.
	te.ev.wait(t, EventRemovedTemp, orphan)
	if _, err := os.Stat(filepath.Join(te.dir, dirBody, string(orphan)+extBody)); !os.IsNotExist(err) {
		t.Errorf("the uncommitted body was kept: %v", err)
	}
	if n := len(d.Calls()); n != len(old)+1 {
		t.Errorf("%d deliveries, want %d: the uncommitted body must not be sent", n, len(old)+1)
	}
}
