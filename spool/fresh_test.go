package spool

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// metaReadCounter counts reads of queue/ metadata.
type metaReadCounter struct {
	FS
	reads atomic.Int32
}

func (c *metaReadCounter) ReadFile(name string) ([]byte, error) {
	if filepath.Base(filepath.Dir(name)) == dirQueue {
		c.reads.Add(1)
	}
	return c.FS.ReadFile(name)
}

// TestFirstAttemptFromMemory: a message committed by this process is
// delivered the first time from the metadata Put kept, not read back from
// disk; beyond maxFresh waiting messages, the rest are read from disk (the
// queue's memory does not grow with its length), and every message is
// delivered exactly as stored either way.
func TestFirstAttemptFromMemory(t *testing.T) {
	t.Parallel()
	fsys := &metaReadCounter{FS: OSFS()}
	te := newTestEnv(t, Options{FS: fsys})
	const extra = 5
	want := map[ID]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range maxFresh + extra {
		wg.Go(func() {
			body := fmt.Sprintf("Subject: %d\r\n\r\nbody %d\r\n", i, i)
			id := put(t, te.s, body, fmt.Sprintf("r%d@example.org", i))
			mu.Lock()
			want[id] = body
			mu.Unlock()
		})
	}
	wg.Wait()
	te.s.mu.Lock()
	fresh := te.s.fresh
	te.s.mu.Unlock()
	if fresh != maxFresh {
		t.Errorf("%d messages kept in memory, want the cap %d", fresh, maxFresh)
	}

	// An operator's delete of a waiting message releases its place.
	var deleted ID
	for id := range want {
		deleted = id
		break
	}
	if err := te.s.Delete(deleted); err != nil {
		t.Fatal(err)
	}
	delete(want, deleted)

	d := &deliverer{}
	run(t, te.s, d)
	for range len(want) {
		te.ev.wait(t, EventDelivered, "")
	}
	got := map[string]bool{}
	for _, c := range d.Calls() {
		got[c.body] = true
	}
	for id, body := range want {
		if !got[body] {
			t.Errorf("%s: body %q not delivered", id, strings.TrimSpace(body))
		}
	}
	if n := len(d.Calls()); n != len(want) {
		t.Errorf("%d deliveries, want %d", n, len(want))
	}
	if reads := int(fsys.reads.Load()); reads > extra {
		t.Errorf("%d metadata reads for %d deliveries, want at most %d (those beyond the cap)", reads, len(want), extra)
	}
	te.s.mu.Lock()
	fresh = te.s.fresh
	te.s.mu.Unlock()
	if fresh != 0 {
		t.Errorf("%d messages still counted in memory after delivery", fresh)
	}
}
