package spool

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// syncRecorder is an FS that stamps file creations, renames and directory
// syncs with a global sequence number, so that the order of events across goroutines can
// be checked after the fact.
type syncRecorder struct {
	FS
	seq atomic.Int64

	mu      sync.Mutex
	renamed map[string]int64 // new path -> seq of the rename
	created map[string]int64 // path -> seq of the creation
	syncs   map[string][]span
	// gate, if set, is called inside SyncDir before syncing (to hold a
	// sync open while others queue up behind it).
	gate func(dir string, n int)
	// afterRename, if set, is called after each rename.
	afterRename func(newpath string)
	// afterCreate, if set, is called after each file creation.
	afterCreate func(path string)
}

type span struct{ start, end int64 }

func newSyncRecorder() *syncRecorder {
	return &syncRecorder{FS: OSFS(), renamed: map[string]int64{}, created: map[string]int64{}, syncs: map[string][]span{}}
}

func (r *syncRecorder) Create(name string) (File, error) {
	f, err := r.FS.Create(name)
	seq := r.seq.Add(1) // after the directory entry exists
	r.mu.Lock()
	r.created[name] = seq
	after := r.afterCreate
	r.mu.Unlock()
	if after != nil {
		after(name)
	}
	return f, err
}

func (r *syncRecorder) Rename(o, n string) error {
	err := r.FS.Rename(o, n)
	seq := r.seq.Add(1) // after the rename returned
	r.mu.Lock()
	r.renamed[n] = seq
	after := r.afterRename
	r.mu.Unlock()
	if after != nil {
		after(n)
	}
	return err
}

func (r *syncRecorder) SyncDir(dir string) error {
	r.mu.Lock()
	n := len(r.syncs[dir])
	gate := r.gate
	r.mu.Unlock()
	if gate != nil {
		gate(dir, n)
	}
	start := r.seq.Add(1) // before the sync begins
	err := r.FS.SyncDir(dir)
	end := r.seq.Add(1)
	r.mu.Lock()
	r.syncs[dir] = append(r.syncs[dir], span{start, end})
	r.mu.Unlock()
	return err
}

// covered reports whether some sync of dir started after seq renamed and
// ended before done.
func (r *syncRecorder) covered(dir string, renamed, done int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.syncs[dir] {
		if s.start > renamed && s.end < done {
			return true
		}
	}
	return false
}

func TestGroupCommit(t *testing.T) {
	t.Parallel()
	const n = 50
	rec := newSyncRecorder()
	te := newTestEnv(t, Options{FS: rec})
	queueDir := filepath.Join(te.dir, dirQueue)
	bodyDir := filepath.Join(te.dir, dirBody)

	// Hold the first queue/ sync until every Put has committed, so that the
	// others pile up behind it and must share the next one.
	allCommitted := make(chan struct{})
	var commits atomic.Int32
	rec.mu.Lock()
	rec.gate = func(dir string, k int) {
		if dir == queueDir && k == 0 {
			select {
			case <-allCommitted:
			case <-time.After(waitLimit):
				t.Errorf("not all Puts reached the commit")
			}
		}
	}
	// The commit is the creation of the metadata under its final name.
	rec.afterCreate = func(p string) {
		if strings.HasPrefix(p, queueDir) && commits.Add(1) == n {
			close(allCommitted)
		}
	}
	rec.mu.Unlock()

	ids := make([]ID, n)
	returned := make([]int64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id, err := te.s.Put(context.Background(), Envelope{To: []string{"a@x"}}, strings.NewReader(fmt.Sprint("msg ", i)))
			returned[i] = rec.seq.Add(1)
			if err != nil {
				t.Errorf("Put %d: %v", i, err)
			}
			ids[i] = id
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	for i, id := range ids {
		meta := filepath.Join(queueDir, string(id)+extMeta)
		body := filepath.Join(bodyDir, string(id)+extBody)
		rec.mu.Lock()
		rm, rb := rec.created[meta], rec.created[body]
		if rm == 0 || rb == 0 {
			t.Fatalf("Put %s: metadata or body was not created through the FS", id)
		}
		rec.mu.Unlock()
		if !rec.covered(queueDir, rm, returned[i]) {
			t.Errorf("Put %s returned without a queue/ sync that started after its commit", id)
		}
		// The body must be durable before the commit marker exists.
		if !rec.covered(bodyDir, rb, rm) {
			t.Errorf("Put %s committed before a body/ sync covered its body", id)
		}
	}
	rec.mu.Lock()
	qs, bs := len(rec.syncs[queueDir]), len(rec.syncs[bodyDir])
	rec.mu.Unlock()
	t.Logf("%d Puts: %d queue/ syncs, %d body/ syncs", n, qs, bs)
	if qs > n || bs > n {
		t.Errorf("%d queue/ and %d body/ syncs for %d Puts, want at most one each per Put", qs, bs, n)
	}
	// With the first sync held open until every Put had committed, the
	// other 49 cannot each have had their own.
	if qs >= n {
		t.Errorf("queue/ syncs were not shared: %d for %d Puts", qs, n)
	}
}

// countSyncFS counts SyncDir calls and blocks the first until released.
type countSyncFS struct {
	FS
	calls   atomic.Int32
	release chan struct{}
	entered chan struct{}
}

func (c *countSyncFS) SyncDir(string) error {
	if c.calls.Add(1) == 1 {
		close(c.entered)
		<-c.release
	}
	return nil
}

func TestDirSyncerBatches(t *testing.T) {
	t.Parallel()
	const n = 20
	fsys := &countSyncFS{release: make(chan struct{}), entered: make(chan struct{})}
	d := newDirSyncer(fsys, "dir")

	var wg sync.WaitGroup
	wg.Go(func() { d.sync() })
	<-fsys.entered // sync #1 is running
	for range n {
		wg.Go(func() { d.sync() })
	}
	// Every caller arrived while #1 ran (so #1 may predate their renames);
	// wait until all are parked, then let #1 finish.
	for {
		d.mu.Lock()
		w := d.waiting
		d.mu.Unlock()
		if w == n {
			break
		}
		runtime.Gosched()
	}
	close(fsys.release)
	wg.Wait()
	if got := fsys.calls.Load(); got != 2 {
		t.Errorf("%d syncs for 1 + %d callers arriving during the first, want 2", got, n)
	}
}

type failSyncFS struct {
	FS
	fail atomic.Bool
}

func (f *failSyncFS) SyncDir(string) error {
	if f.fail.Load() {
		return errInjected
	}
	return nil
}

func TestDirSyncerReportsFailure(t *testing.T) {
	t.Parallel()
	fsys := &failSyncFS{}
	d := newDirSyncer(fsys, "dir")
	if err := d.sync(); err != nil {
		t.Fatal(err)
	}
	fsys.fail.Store(true)
	if err := d.sync(); err != errInjected {
		t.Fatalf("sync = %v, want the injected error", err)
	}
	fsys.fail.Store(false)
	if err := d.sync(); err != nil {
		t.Fatalf("sync after recovery = %v", err)
	}
}

// TestRemovalSyncs: an operator's delete is durable before Delete returns;
// the clean-up after a delivery costs no directory fsync (a crash that
// undoes it only means the message is delivered again).
func TestRemovalSyncs(t *testing.T) {
	t.Parallel()
	rec := newSyncRecorder()
	te := newTestEnv(t, Options{FS: rec})
	queueDir := filepath.Join(te.dir, dirQueue)
	queueSyncs := func() int {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.syncs[queueDir])
	}

	deleted := put(t, te.s, "Subject: x\r\n\r\ndelete me\r\n", "a@x")
	before := queueSyncs()
	if err := te.s.Delete(deleted); err != nil {
		t.Fatal(err)
	}
	if queueSyncs() == before {
		t.Error("Delete returned without syncing queue/")
	}

	delivered := put(t, te.s, "Subject: x\r\n\r\ndeliver me\r\n", "a@x")
	before = queueSyncs()
	run(t, te.s, &deliverer{})
	te.ev.wait(t, EventDelivered, delivered)
	waitGone(t, te.s, delivered)
	if n := queueSyncs() - before; n != 0 {
		t.Errorf("delivery clean-up synced queue/ %d times, want 0", n)
	}
}
