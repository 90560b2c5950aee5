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

	// Hold the first body/ sync until every Put has created its body file,
	// so that the others pile up behind it and must share the next one.
	allCreated := make(chan struct{})
	var creates atomic.Int32
	rec.mu.Lock()
	rec.gate = func(dir string, k int) {
		if dir == bodyDir && k == 0 {
			select {
			case <-allCreated:
			case <-time.After(waitLimit):
				t.Errorf("not all Puts created their body file")
			}
		}
	}
	rec.afterCreate = func(p string) {
		if strings.HasPrefix(p, bodyDir) && creates.Add(1) == n {
			close(allCreated)
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
		body := filepath.Join(bodyDir, string(id)+extBody)
		rec.mu.Lock()
		created := rec.created[body]
		rec.mu.Unlock()
		if created == 0 {
			t.Fatalf("Put %s: body was not created through the FS", id)
		}
		// The body file's name is durable before the 250.
		if !rec.covered(bodyDir, created, returned[i]) {
			t.Errorf("Put %s returned without a body/ sync that started after its body was created", id)
		}
	}
	rec.mu.Lock()
	qs, bs := len(rec.syncs[queueDir]), len(rec.syncs[bodyDir])
	rec.mu.Unlock()
	t.Logf("%d Puts: %d body/ syncs", n, bs)
	if qs != 0 {
		t.Errorf("Put synced queue/ %d times; its metadata is in the body file", qs)
	}
	// With the first sync held open until every Put had created its body,
	// the other 49 cannot each have had their own.
	if bs >= n {
		t.Errorf("body/ syncs were not shared: %d for %d Puts", bs, n)
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

// TestRemovalSyncs: an operator's delete is durable before Delete returns,
// in every directory it touched; the clean-up after a delivery costs no
// directory fsync (a crash that undoes it only means the message is
// delivered again).
func TestRemovalSyncs(t *testing.T) {
	t.Parallel()
	rec := newSyncRecorder()
	te := newTestEnv(t, Options{FS: rec})
	queueDir, bodyDir := filepath.Join(te.dir, dirQueue), filepath.Join(te.dir, dirBody)
	syncs := func() (queue, body int) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.syncs[queueDir]), len(rec.syncs[bodyDir])
	}

	// Its metadata still at the end of the body file.
	deleted := put(t, te.s, "Subject: x\r\n\r\ndelete me\r\n", "a@x")
	_, bodyBefore := syncs()
	if err := te.s.Delete(deleted); err != nil {
		t.Fatal(err)
	}
	if _, b := syncs(); b == bodyBefore {
		t.Error("Delete returned without syncing body/")
	}

	// With a metadata file of its own, as after a deferred attempt.
	rewritten := put(t, te.s, "Subject: x\r\n\r\ndelete me too\r\n", "a@x")
	m, err := te.s.Get(rewritten)
	if err != nil {
		t.Fatal(err)
	}
	if err := te.s.writeMeta(m, dirQueue, te.s.queueSync); err != nil {
		t.Fatal(err)
	}
	queueBefore, bodyBefore := syncs()
	if err := te.s.Delete(rewritten); err != nil {
		t.Fatal(err)
	}
	if q, b := syncs(); q == queueBefore || b == bodyBefore {
		t.Errorf("Delete synced queue/ %d and body/ %d times, want both", q-queueBefore, b-bodyBefore)
	}
	assertEmptySpool(t, te.dir)

	delivered := put(t, te.s, "Subject: x\r\n\r\ndeliver me\r\n", "a@x")
	queueBefore, bodyBefore = syncs()
	run(t, te.s, &deliverer{})
	te.ev.wait(t, EventDelivered, delivered)
	waitGone(t, te.s, delivered)
	if q, b := syncs(); q != queueBefore || b != bodyBefore {
		t.Errorf("delivery clean-up synced queue/ %d and body/ %d times, want 0", q-queueBefore, b-bodyBefore)
	}
}
