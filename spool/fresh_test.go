package spool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestFirstAttemptFromMemory: a message committed by this process is
// delivered the first time from the metadata Put kept, not read back from
// disk; beyond maxFresh waiting messages, the rest are read from disk (the
// queue's memory does not grow with its length), and every message is
// delivered exactly as stored either way.
func TestFirstAttemptFromMemory(t *testing.T) {
	t.Parallel()
	fsys := &opCounter{FS: OSFS()}
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
	if reads := int(fsys.metaReads.Load()); reads > extra {
		t.Errorf("%d metadata reads for %d deliveries, want at most %d (those beyond the cap)", reads, len(want), extra)
	}
	te.s.mu.Lock()
	fresh = te.s.fresh
	te.s.mu.Unlock()
	if fresh != 0 {
		t.Errorf("%d messages still counted in memory after delivery", fresh)
	}
}

// gateBodySync holds the first fsync of a body file until released: the
// moment a Put has written its trailer and waits for the disk.
type gateBodySync struct {
	FS
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (g *gateBodySync) Create(name string) (File, error) {
	f, err := g.FS.Create(name)
	if err != nil || !strings.HasSuffix(name, extBody) {
		return f, err
	}
	return &gatedFile{File: f, g: g}, nil
}

type gatedFile struct {
	File
	g *gateBodySync
}

func (f *gatedFile) Sync() error {
	f.g.once.Do(func() {
		close(f.g.entered)
		<-f.g.release
	})
	return f.File.Sync()
}

// TestDeleteDuringPut: once Put has written the trailer, `queue delete`
// can see the message; a Delete then must win over the Put that is still
// making it durable, not be undone by it (the message would come back and
// be delivered although the operator deleted it).
func TestDeleteDuringPut(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	g := &gateBodySync{FS: OSFS(), entered: make(chan struct{}), release: make(chan struct{})}
	ev := newEvents()
	s, err := Open(dir, Options{FS: g, Events: ev.record})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	id := s.NewID()
	done := make(chan error, 1)
	go func() {
		done <- s.PutID(context.Background(), id, Envelope{To: []string{"a@x"}}, strings.NewReader("Subject: x\r\n\r\nbody\r\n"), nil)
	}()
	select {
	case <-g.entered:
	case <-time.After(waitLimit):
		t.Fatal("Put never synced its body file")
	}
	if _, err := s.Get(id); err != nil {
		t.Fatalf("Get while Put commits = %v; the metadata is complete, so it should be visible", err)
	}
	if err := s.Delete(id); err != nil {
		t.Fatalf("Delete while Put commits: %v", err)
	}
	close(g.release)
	if err := <-done; err != nil {
		t.Fatalf("Put: %v", err)
	}
	ev.wait(t, EventDeleted, id)
	if _, err := s.Get(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after the delete = %v, want ErrNotFound", err)
	}
	if n, _ := s.Stats(); n != 0 {
		t.Errorf("%d messages queued after the delete, want 0", n)
	}
	d := &deliverer{}
	stop := run(t, s, d)
	stop()
	if len(d.Calls()) != 0 {
		t.Errorf("the deleted message was delivered")
	}
	assertEmptySpool(t, dir)
}

// TestIncompleteMetadataIsNotAMessage: readers take metadata that is being
// written (or was cut short) for absent, not for corruption.
func TestIncompleteMetadataIsNotAMessage(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	id := te.s.NewID()
	full := metaJSON(t, testMessage(id, Pending))
	writeFile(t, filepath.Join(te.dir, dirQueue, string(id)+extMeta), full[:len(full)/2])
	if _, err := te.s.Get(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of half-written metadata = %v, want ErrNotFound", err)
	}
}

// gateMetaReads holds every read of queue/ metadata until released, so a
// test can act while Open's recovery is still loading the queue.
type gateMetaReads struct {
	FS
	release chan struct{}
}

func (g *gateMetaReads) ReadFile(name string) ([]byte, error) {
	if filepath.Base(filepath.Dir(name)) == dirQueue {
		<-g.release
	}
	return g.FS.ReadFile(name)
}

// TestFlushWhileLoading: `queue flush` right after a restart, before the
// queue has loaded, makes every message due, including those loaded after
// it, and says the count is not complete yet.
func TestFlushWhileLoading(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	const n = 3
	for i := range n {
		put(t, te.s, fmt.Sprintf("Subject: %d\r\n\r\nlater\r\n", i), "a@example.org")
	}
	// Queued by an earlier process, due only in an hour.
	te.s.Close()
	for _, name := range files(t, te.dir, dirQueue) {
		id := ID(strings.TrimSuffix(name, extMeta))
		path := filepath.Join(te.dir, dirQueue, name)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		m, err := decodeMessage(data, id)
		if err != nil {
			t.Fatal(err)
		}
		m.NextAttempt = te.clock.Now().Add(time.Hour)
		writeFile(t, path, metaJSON(t, m))
	}

	g := &gateMetaReads{FS: OSFS(), release: make(chan struct{})}
	s := te.open(t, Options{FS: g})
	if !s.Loading() {
		t.Fatal("Loading() = false while recovery is held")
	}
	s.Flush()
	close(g.release)
	if err := s.waitRecovered(); err != nil {
		t.Fatal(err)
	}
	if s.Loading() {
		t.Error("Loading() = true after recovery")
	}
	d := &deliverer{}
	run(t, s, d)
	for range n {
		te.ev.wait(t, EventDelivered, "")
	}
	if got := len(d.Calls()); got != n {
		t.Errorf("%d delivered after the flush, want %d", got, n)
	}
}
