package spool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// syncCounter counts file creations and fsyncs of body/.
type syncCounter struct {
	FS
	creates, bodySyncs atomic.Int64
}

func (c *syncCounter) Create(name string) (File, error) {
	c.creates.Add(1)
	return c.FS.Create(name)
}

func (c *syncCounter) SyncDir(name string) error {
	if filepath.Base(name) == dirBody {
		c.bodySyncs.Add(1)
	}
	return c.FS.SyncDir(name)
}

// waitReady waits until s has n ready files.
func waitReady(t *testing.T, s *Spool, n int) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		s.ready.mu.Lock()
		k := len(s.ready.ready)
		s.ready.mu.Unlock()
		if k >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d ready files, want %d", k, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestReadyFilesSpareTheDirectorySync: with ReadyFiles, a Put fills a
// file that was created and made durable before it, so it neither creates
// a file nor syncs body/ itself; the messages are whole and delivered, and
// the ready files are neither listed nor left behind by Close.
func TestReadyFilesSpareTheDirectorySync(t *testing.T) {
	t.Parallel()
	fsys := &syncCounter{FS: OSFS()}
	te := newTestEnv(t, Options{FS: fsys, ReadyFiles: 4})
	waitReady(t, te.s, 4)
	creates, syncs := fsys.creates.Load(), fsys.bodySyncs.Load()
	if syncs == 0 {
		t.Fatal("ready files handed out before body/ was synced")
	}
	a := put(t, te.s, "Subject: a\r\n\r\none\r\n", "a@x")
	b := put(t, te.s, "Subject: b\r\n\r\ntwo\r\n", "b@x")
	if n := fsys.creates.Load() - creates; n != 0 {
		t.Errorf("%d files created by two Puts into ready files, want 0", n)
	}
	if n := fsys.bodySyncs.Load() - syncs; n != 0 {
		t.Errorf("%d syncs of body/ by two Puts into ready files, want 0", n)
	}
	list, err := te.s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("List shows %d messages, want the 2 put (not the ready files)", len(list))
	}
	d := &deliverer{}
	run(t, te.s, d)
	te.ev.wait(t, EventDelivered, a)
	te.ev.wait(t, EventDelivered, b)
	for _, c := range d.Calls() {
		if !strings.Contains(c.body, "Subject: ") {
			t.Errorf("delivered %q", c.body)
		}
	}
	if err := te.s.Close(); err != nil {
		t.Fatal(err)
	}
	assertEmptySpool(t, te.dir)
}

// TestReadyFileGivenBack: an id from NewID that is not put (the message
// was refused) returns its file to the pool, and is never a message.
func TestReadyFileGivenBack(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{ReadyFiles: 2})
	waitReady(t, te.s, 2)
	id := te.s.NewID()
	if _, err := os.Stat(filepath.Join(te.dir, dirBody, string(id)+extBody)); err != nil {
		t.Fatalf("NewID did not name a ready file: %v", err)
	}
	te.s.DiscardID(id)
	if again := te.s.NewID(); again != id {
		t.Errorf("NewID after DiscardID = %s, want the file given back, %s", again, id)
	} else {
		te.s.DiscardID(again)
	}
	if _, err := te.s.Get(id); err == nil {
		t.Error("an empty ready file is a message to Get")
	}
	if err := te.s.Delete(id); err == nil {
		t.Error("an empty ready file is a message to Delete")
	}
}

// TestReadyFilesAgeOut: a ready file's name dates its message (IDs carry
// their creation time), so one older than maxReadyAge is not handed out
// but replaced.
func TestReadyFilesAgeOut(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{ReadyFiles: 2})
	waitReady(t, te.s, 2)
	te.s.ready.mu.Lock()
	old := []ID{te.s.ready.ready[0].id, te.s.ready.ready[1].id}
	te.s.ready.mu.Unlock()
	te.clock.Advance(maxReadyAge + time.Second)
	id := te.s.NewID()
	if id == old[0] || id == old[1] {
		t.Fatalf("NewID handed out a file made %v before", maxReadyAge+time.Second)
	}
	if got, want := id.Time(), te.clock.Now().Truncate(time.Second); !got.Equal(want) {
		t.Errorf("id dated %v, want now (%v)", got, want)
	}
	deadline := time.Now().Add(waitLimit)
	for _, o := range old {
		for {
			if _, err := os.Stat(filepath.Join(te.dir, dirBody, string(o)+extBody)); os.IsNotExist(err) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("aged-out ready file %s still there", o)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// TestReadyFilesUnderConcurrentPuts: many Puts at once, more than there
// are ready files: each gets a file of its own (a ready one or one it
// creates), and every message is whole.
func TestReadyFilesUnderConcurrentPuts(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{ReadyFiles: 4})
	const n = 40
	var wg sync.WaitGroup
	ids := make([]ID, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := strings.Repeat("x", i) + "\r\n"
			ids[i], errs[i] = te.s.Put(context.Background(), Envelope{From: "a@x", To: []string{"b@x"}}, strings.NewReader(body))
		}()
	}
	wg.Wait()
	seen := map[ID]bool{}
	for i, id := range ids {
		if errs[i] != nil {
			t.Fatalf("Put %d: %v", i, errs[i])
		}
		if seen[id] {
			t.Fatalf("two messages got id %s", id)
		}
		seen[id] = true
		m, err := te.s.Get(id)
		if err != nil {
			t.Fatalf("Get %s: %v", id, err)
		}
		if m.Size != int64(i+2) {
			t.Errorf("message %d: size %d, want %d", i, m.Size, i+2)
		}
	}
}

// TestReadyFilesAfterACrash: ready files a crash left (empty, never
// filled) are not messages: the first attempt after the restart removes
// them, nothing is delivered from them, and the message beside them is.
func TestReadyFilesAfterACrash(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{ReadyFiles: 3})
	waitReady(t, te.s, 3)
	good := put(t, te.s, "Subject: kept\r\n\r\nbody\r\n", "a@x")
	crashed := crashCopy(t, te.dir)
	left := len(files(t, crashed, dirBody))
	if left < 3 {
		t.Fatalf("%d files in body/, want the message and at least 2 ready files", left)
	}
	te2 := &testEnv{dir: crashed, clock: te.clock, ev: newEvents()}
	s := te2.open(t, Options{})
	d := &deliverer{}
	run(t, s, d)
	te2.ev.wait(t, EventDelivered, good)
	for range left - 1 {
		if ev := te2.ev.wait(t, EventRemovedTemp, ""); !errors.Is(ev.Err, ErrEmptyLeftover) {
			t.Errorf("removed-temp for a ready file: %v, want ErrEmptyLeftover", ev.Err)
		}
	}
	if calls := d.Calls(); len(calls) != 1 {
		t.Errorf("%d deliveries, want the one message", len(calls))
	}
	assertEmptySpool(t, crashed)
}

// crashCopy copies the spool in dir as it is now, to open as what a crash
// left: the files stay as they are when the process dies, which Close
// would have cleaned up.
func crashCopy(t *testing.T, dir string) string {
	t.Helper()
	crashed := t.TempDir()
	for _, sub := range []string{dirTmp, dirBody, dirQueue, dirFailed, dirCorrupt} {
		if err := os.MkdirAll(filepath.Join(crashed, sub), 0o700); err != nil {
			t.Fatal(err)
		}
		for _, name := range files(t, dir, sub) {
			data, err := os.ReadFile(filepath.Join(dir, sub, name))
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(crashed, sub, name), string(data))
		}
	}
	return crashed
}

// TestReadyFilesAfterACrashNotCounted: the ready files a crash left are
// removed by the recovery itself, not at their first attempt, so that the
// queue a restarted daemon reports (the loaded count, Stats for the
// metrics) is the messages alone, even while no delivery runs (an upstream
// that is down holds the whole queue). Older never-attempted messages are
// still loaded by name, unread.
func TestReadyFilesAfterACrashNotCounted(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{ReadyFiles: 8})
	waitReady(t, te.s, 8)
	var good []ID
	for i := range 3 {
		good = append(good, put(t, te.s, fmt.Sprintf("Subject: kept %d\r\n\r\nbody\r\n", i), "a@x"))
	}
	crashed := crashCopy(t, te.dir)
	left := len(files(t, crashed, dirBody)) - len(good)
	if left < 5 {
		t.Fatalf("%d ready files in body/, want at least 5", left)
	}
	te2 := &testEnv{dir: crashed, clock: te.clock, ev: newEvents()}
	s := te2.open(t, Options{})
	if ev := te2.ev.wait(t, EventLoaded, ""); ev.Queued != len(good) || ev.Err != nil {
		t.Errorf("loaded %d (err %v), want the %d messages", ev.Queued, ev.Err, len(good))
	}
	if n, _ := s.Stats(); n != len(good) {
		t.Errorf("Stats: %d queued, want %d", n, len(good))
	}
	// The events of the recovery come before EventLoaded.
	for range left {
		if ev := te2.ev.wait(t, EventRemovedTemp, ""); !errors.Is(ev.Err, ErrEmptyLeftover) {
			t.Errorf("removed-temp for a ready file: %v, want ErrEmptyLeftover", ev.Err)
		}
	}
	if n := len(files(t, crashed, dirBody)); n != len(good) {
		t.Errorf("%d files in body/ after the recovery, want the %d messages", n, len(good))
	}
	for _, id := range good {
		if _, err := s.Get(id); err != nil {
			t.Errorf("Get(%s): %v", id, err)
		}
	}
}

// tailFails fails the first fails trailer reads of one file.
type tailFails struct {
	FS
	name  string
	fails atomic.Int32
}

func (f *tailFails) ReadTail(name string, buf []byte) ([]byte, int64, error) {
	if filepath.Base(name) == f.name && f.fails.Add(-1) >= 0 {
		return nil, 0, &os.PathError{Op: "read", Path: name, Err: syscall.EIO}
	}
	return f.FS.ReadTail(name, buf)
}

// TestUnreadFileLookedAtAgainAfterAReadError: a message loaded at Open
// from its file name alone is checked at its first attempt (the recovery's
// own look at the newest files failed too); if that read fails, the next attempt checks it again, so a Put cut short by a crash
// is still removed, not forgotten with its file left behind.
func TestUnreadFileLookedAtAgainAfterAReadError(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	te.s.Close()
	id := newID(te.clock.Now().Add(-time.Minute))
	name := string(id) + extBody
	writeFile(t, filepath.Join(te.dir, dirBody, name), "Subject: x\r\n\r\nnever committed\r\n")
	// Two failures: the recovery looks at the newest files itself (for
	// ready files a crash left), then the first attempt reads it.
	fsys := &tailFails{FS: OSFS(), name: name}
	fsys.fails.Store(2)
	s := te.open(t, Options{FS: fsys, Backoff: []time.Duration{time.Second}})
	run(t, s, &deliverer{})
	te.ev.wait(t, EventError, id)
	// The retry is scheduled a backoff after the attempt's end, which may
	// come after the event: move time on until it has happened.
	deadline := time.Now().Add(waitLimit)
	for !te.ev.has(EventRemovedTemp, id) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s event for %s; saw %v", EventRemovedTemp, id, te.ev.kinds())
		}
		te.clock.Advance(2 * time.Second)
		s.Kick()
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(te.dir, dirBody, name)); !os.IsNotExist(err) {
		t.Errorf("the Put cut short is still in body/: %v", err)
	}
}

// openReadyFails fails the first OpenReady.
type openReadyFails struct {
	FS
	failed atomic.Bool
}

func (f *openReadyFails) OpenReady(name string) (File, int64, error) {
	if f.failed.CompareAndSwap(false, true) {
		return nil, 0, &os.PathError{Op: "open", Path: name, Err: syscall.EMFILE}
	}
	return f.FS.OpenReady(name)
}

// TestReadyFilesNotLeftByFailedPuts: a Put that fails, before it fills
// its ready file (no recipients) or while opening it, leaves no file
// behind: the first goes back to the pool, the second is removed.
func TestReadyFilesNotLeftByFailedPuts(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{FS: &openReadyFails{FS: OSFS()}, ReadyFiles: 2})
	waitReady(t, te.s, 2)
	if _, err := te.s.Put(context.Background(), Envelope{From: "a@x"}, strings.NewReader("x\r\n")); err == nil {
		t.Fatal("Put without recipients succeeded")
	}
	te.s.ready.mu.Lock()
	handed := len(te.s.ready.handed)
	te.s.ready.mu.Unlock()
	if handed != 0 {
		t.Errorf("%d ready files still handed out after a failed Put", handed)
	}
	id := te.s.NewID()
	err := te.s.PutID(context.Background(), id, Envelope{From: "a@x", To: []string{"b@x"}}, strings.NewReader("x\r\n"), nil)
	if !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("PutID: %v, want the open's error", err)
	}
	te.s.DiscardID(id)
	if err := te.s.Close(); err != nil {
		t.Fatal(err)
	}
	assertEmptySpool(t, te.dir)
}
