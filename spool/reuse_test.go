package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// bodyOps counts the files created and removed in body/.
type bodyOps struct {
	FS
	creates, removes atomic.Int64
}

// deliverNumbered delivers n numbered messages in turn through a spool on
// fsys with two ready files, so that delivered messages' files are kept
// and refilled all along.
func deliverNumbered(t *testing.T, fsys FS, n int) {
	t.Helper()
	te := newTestEnv(t, Options{FS: fsys, ReadyFiles: 2})
	waitReady(t, te.s, 2)
	d := &deliverer{}
	run(t, te.s, d)
	var bodies []string
	for i := range n {
		bodies = append(bodies, fmt.Sprintf("Subject: %d\r\n\r\nbody %d\r\n", i, i))
	}
	deliverInTurn(t, te, d, bodies)
}

// deliverInTurn puts each body and waits for its delivery before the
// next, then checks that d received exactly the bodies, in order.
func deliverInTurn(t *testing.T, te *testEnv, d *deliverer, bodies []string) []ID {
	t.Helper()
	var ids []ID
	for _, body := range bodies {
		id := put(t, te.s, body, "a@x")
		ids = append(ids, id)
		te.ev.wait(t, EventDelivered, id)
	}
	calls := d.Calls()
	if len(calls) != len(bodies) {
		t.Fatalf("%d deliveries, want %d", len(calls), len(bodies))
	}
	for i, c := range calls {
		if c.body != bodies[i] {
			t.Errorf("message %d delivered as %d bytes %.40q…, want %d bytes %.40q…", i, len(c.body), c.body, len(bodies[i]), bodies[i])
		}
	}
	return ids
}

func inBody(name string) bool { return filepath.Base(filepath.Dir(name)) == dirBody }

func (c *bodyOps) Create(name string) (File, error) {
	if inBody(name) {
		c.creates.Add(1)
	}
	return c.FS.Create(name)
}

func (c *bodyOps) Remove(name string) error {
	if inBody(name) {
		c.removes.Add(1)
	}
	return c.FS.Remove(name)
}

// TestDeliveredFilesReused: a delivered message's file becomes a ready
// file for a later message instead of being removed, so a steady flow
// creates and removes almost no files; each later message is stored and
// delivered exactly (one shorter than the file it reuses is cut to its
// length); a file over maxReusedSize is removed, not kept.
func TestDeliveredFilesReused(t *testing.T) {
	t.Parallel()
	ops := &bodyOps{FS: OSFS()}
	te := newTestEnv(t, Options{FS: ops, ReadyFiles: 4})
	waitReady(t, te.s, 4)
	d := &deliverer{}
	run(t, te.s, d)
	const n = 40
	var want []string
	for i := range n {
		// Sizes go down and up, so reused files are longer and shorter
		// than their new messages.
		want = append(want, fmt.Sprintf("Subject: %d\r\n\r\n%s\r\n", i, strings.Repeat("x", (i*7%5)*3000)))
	}
	ids := deliverInTurn(t, te, d, want)
	// The files kept, marked or filled again, are no delivered message.
	if list, err := te.s.List(); err != nil || len(list) != 0 {
		t.Errorf("List after every delivery: %d messages, %v", len(list), err)
	}
	for _, id := range ids {
		if _, err := te.s.Get(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%s) of a delivered message: %v, want ErrNotFound", id, err)
		}
	}
	// 4 made at the start; without reuse, about one per message.
	t.Logf("%d files created and %d removed for %d messages", ops.creates.Load(), ops.removes.Load(), n)
	if c, r := ops.creates.Load(), ops.removes.Load(); c > 4+n/4 || r > n/4 {
		t.Errorf("%d files created and %d removed for %d messages, want most files reused", c, r, n)
	}

	removes := ops.removes.Load()
	big := put(t, te.s, "Subject: big\r\n\r\n"+strings.Repeat("y", maxReusedSize)+"\r\n", "a@x")
	te.ev.wait(t, EventDelivered, big)
	if ops.removes.Load() == removes {
		t.Error("a file over maxReusedSize was not removed")
	}
	for _, name := range files(t, te.dir, dirBody) {
		fi, err := os.Stat(filepath.Join(te.dir, dirBody, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > maxReusedSize {
			t.Errorf("%s: %d bytes kept in body/ after delivery", name, fi.Size())
		}
	}
}

// TestReusedFilesAfterACrash: nothing a crash can leave of a delivered
// message's file kept for reuse is delivered, listed or counted: the file
// marked under its old ID (a crash before the rename), under its .reuse
// name (with its mark, or without it: a power failure that kept the rename
// only), marked under a new ID (in the pool), and overwritten in part by a
// later message whose Put never finished (its trailer written, the old
// marked end not yet cut off). The recovery removes each as a file made
// ready.
func TestReusedFilesAfterACrash(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	long := "Subject: delivered\r\n\r\n" + strings.Repeat("d", 5000) + "\r\n"
	var delivered []ID
	for range 5 {
		delivered = append(delivered, put(t, te.s, long, "a@x"))
	}
	kept := put(t, te.s, "Subject: kept\r\n\r\nbody\r\n", "a@x")
	te.s.Close()
	path := func(id ID, ext string) string { return filepath.Join(te.dir, dirBody, string(id)+ext) }
	marked, renamed, unmarked, pooled, overwritten := delivered[0], delivered[1], delivered[2], delivered[3], delivered[4]
	for _, id := range []ID{marked, renamed, pooled, overwritten} {
		if err := OSFS().Reuse(path(id, extBody), maxReusedSize); err != nil {
			t.Fatal(err)
		}
	}
	move := func(from ID, to ID, ext string) {
		t.Helper()
		if err := os.Rename(path(from, extBody), path(to, ext)); err != nil {
			t.Fatal(err)
		}
	}
	move(renamed, newID(te.clock.Now()), extReuse)
	move(unmarked, newID(te.clock.Now()), extReuse)
	move(pooled, newID(te.clock.Now()), extBody)
	refilled := newID(te.clock.Now())
	move(overwritten, refilled, extBody)
	short := "Subject: never acknowledged\r\n\r\nx\r\n"
	meta, err := encodeMessage(&Message{ID: refilled, Envelope: Envelope{From: "app@example.com", To: []string{"a@x"}},
		Size: int64(len(short)), Rcpts: []Rcpt{{Addr: "a@x", State: Pending}}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path(refilled, extBody), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(appendTrailer([]byte(short), meta), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()

	te.ev = newEvents()
	s := te.open(t, Options{})
	if ev := te.ev.wait(t, EventLoaded, ""); ev.Queued != 1 || ev.Err != nil {
		t.Errorf("loaded %d (err %v), want the one message", ev.Queued, ev.Err)
	}
	for range 5 {
		if ev := te.ev.wait(t, EventRemovedTemp, ""); !errors.Is(ev.Err, ErrEmptyLeftover) {
			t.Errorf("removed-temp: %v, want ErrEmptyLeftover", ev.Err)
		}
	}
	if list, err := s.List(); err != nil || len(list) != 1 || list[0].ID != kept {
		t.Errorf("List: %v, %v; want only %s", list, err, kept)
	}
	d := &deliverer{}
	run(t, s, d)
	te.ev.wait(t, EventDelivered, kept)
	if calls := d.Calls(); len(calls) != 1 {
		t.Errorf("%d deliveries, want only the kept message", len(calls))
	}
	if names := files(t, te.dir, dirCorrupt); len(names) != 0 {
		t.Errorf("quarantined %v", names)
	}
	assertEmptySpool(t, te.dir)
}

// TestShortMessagesInLongReusedFiles: a message stored in the file of a
// longer delivered one is cut to its own length before its fsync, so that
// after a crash its trailer, at the end of the file, is found and it is
// delivered as it was submitted.
func TestShortMessagesInLongReusedFiles(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{ReadyFiles: 2})
	waitReady(t, te.s, 2)
	stop := run(t, te.s, &deliverer{})
	for range 6 {
		id := put(t, te.s, "Subject: long\r\n\r\n"+strings.Repeat("L", 20000)+"\r\n", "a@x")
		te.ev.wait(t, EventDelivered, id)
	}
	stop()
	const short = "Subject: short\r\n\r\nS\r\n"
	var ids []ID
	for range 4 {
		ids = append(ids, put(t, te.s, short, "a@x"))
	}
	crashed := crashCopy(t, te.dir)
	te2 := &testEnv{dir: crashed, clock: te.clock, ev: newEvents()}
	s := te2.open(t, Options{})
	d := &deliverer{}
	run(t, s, d)
	for _, id := range ids {
		te2.ev.wait(t, EventDelivered, id)
	}
	for _, c := range d.Calls() {
		if c.body != short {
			t.Errorf("delivered %d bytes %.40q…, want %q", len(c.body), c.body, short)
		}
	}
}

// TestReadyPoolOverfull: files given back while a refill runs can leave
// the pool holding more than it wants; a refill then has nothing to do
// (it used to slice with a negative bound and panic), and the spool goes
// on working.
func TestReadyPoolOverfull(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{ReadyFiles: 2})
	waitReady(t, te.s, 2)
	a, b := te.s.NewID(), te.s.NewID() // the second take asks for a refill
	waitReady(t, te.s, 2)
	te.s.DiscardID(a)
	te.s.DiscardID(b)
	te.s.ready.mu.Lock()
	n := len(te.s.ready.ready)
	te.s.ready.mu.Unlock()
	if n <= 2 {
		t.Fatalf("%d ready files, want more than the 2 wanted", n)
	}
	func() {
		defer func() {
			if p := recover(); p != nil {
				// fill panicked holding the pool's lock: let it go, or
				// Close would wait for it forever.
				te.s.ready.mu.TryLock()
				te.s.ready.mu.Unlock()
				t.Errorf("fill of an overfull pool panicked: %v", p)
			}
		}()
		if err := te.s.ready.fill(); err != nil {
			t.Errorf("fill of an overfull pool: %v", err)
		}
	}()
	d := &deliverer{}
	run(t, te.s, d)
	for i := range 4 {
		id := put(t, te.s, fmt.Sprintf("Subject: %d\r\n\r\nbody\r\n", i), "a@x")
		te.ev.wait(t, EventDelivered, id)
	}
}

// TestReuseTakesOnlyMessageFiles: Reuse marks only a whole message's file
// of at most the size given, and OpenReady opens only an empty or marked
// file: neither can touch a queued message or anything else.
func TestReuseTakesOnlyMessageFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	meta := []byte(`{"ID":"20261127T111500-abcdefghij"}`)
	message := appendTrailer([]byte("Subject: x\r\n\r\nbody\r\n"), meta)
	marked := append([]byte(nil), message...)
	copy(marked[len(marked)-footerSize:], reusedMagic)
	for _, tt := range []struct {
		name       string
		content    []byte // nil: a directory
		reuse      bool   // Reuse(maxSize 1 KiB) marks it
		openReady  bool   // OpenReady opens it
		reusedSize int64
	}{
		{name: "message", content: message, reuse: true},
		{name: "message over the size", content: appendTrailer([]byte(strings.Repeat("x", 2000)), meta)},
		{name: "empty", content: []byte{}, openReady: true},
		{name: "marked", content: marked, openReady: true, reusedSize: int64(len(marked))},
		{name: "no footer", content: []byte("Subject: x\r\n\r\nbody\r\n")},
		{name: "short", content: []byte(reusedMagic)},
		{name: "directory"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			if tt.content == nil {
				if err := os.Mkdir(path, 0o700); err != nil {
					t.Fatal(err)
				}
			} else {
				writeFile(t, path, string(tt.content))
			}
			f, size, err := OSFS().OpenReady(path)
			if (err == nil) != tt.openReady {
				t.Errorf("OpenReady: %v, want opened %v", err, tt.openReady)
			}
			if err == nil {
				f.Close()
				if size != tt.reusedSize {
					t.Errorf("OpenReady: size %d, want %d", size, tt.reusedSize)
				}
			}
			err = OSFS().Reuse(path, 1<<10)
			if (err == nil) != tt.reuse {
				t.Errorf("Reuse: %v, want marked %v", err, tt.reuse)
			}
			if tt.content == nil {
				return
			}
			got, rerr := os.ReadFile(path)
			if rerr != nil {
				t.Fatal(rerr)
			}
			switch {
			case err == nil && string(got) != string(marked):
				t.Errorf("marked as %q, want %q", got, marked)
			case err != nil && string(got) != string(tt.content):
				t.Errorf("refused, but changed to %q", got)
			}
		})
	}
}

// TestLookupRacingReuse: a reader of a queued message (`queue show`) whose
// file is delivered and reused while it reads gets the message while its
// bytes are still there (the file only marked), and "delivered while it
// was being read" (ErrNotFound), not damage, once a later message has
// filled the file. Bytes changed under a message
// still queued, or deleted meanwhile, are damage (ErrCorrupt): leaving
// the queue by any other way than reuse leaves the open file as it was.
func TestLookupRacingReuse(t *testing.T) {
	t.Parallel()
	body := "Subject: x\r\n\r\n" + strings.Repeat("x", 3000) + "\r\n"
	later := "Subject: a later message\r\n\r\nshort\r\n"
	tests := []struct {
		name string
		// change changes what the open reader will read; name is the
		// message's file.
		change func(t *testing.T, te *testEnv, id ID, name string)
		want   string // "body", "delivered" or "damaged"
	}{
		{"marked for reuse", func(t *testing.T, te *testEnv, id ID, _ string) {
			keep(t, te, id)
		}, "body"},
		{"filled by a later message", func(t *testing.T, te *testEnv, id ID, _ string) {
			kept := keep(t, te, id)
			// What a Put into the reused file leaves: the later message
			// from the start, its trailer, the rest cut off.
			meta, err := encodeMessage(&Message{ID: newID(te.clock.Now()), Envelope: Envelope{From: "app@example.com", To: []string{"a@x"}},
				Size: int64(len(later)), Rcpts: []Rcpt{{Addr: "a@x", State: Pending}}})
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, kept, string(appendTrailer([]byte(later), meta)))
		}, "delivered"},
		{"being filled by a longer later message", func(t *testing.T, te *testEnv, id ID, _ string) {
			// A Put still writing: the later message's first 5000 bytes,
			// past the old end, and no trailer yet.
			writeFile(t, keep(t, te, id), "Subject: a later message\r\n\r\n"+strings.Repeat("y", 5000))
		}, "delivered"},
		{"damaged, still queued", func(t *testing.T, _ *testEnv, _ ID, name string) {
			overwriteStart(t, name)
		}, "damaged"},
		{"damaged, then deleted", func(t *testing.T, te *testEnv, id ID, name string) {
			overwriteStart(t, name)
			if err := te.s.Delete(id); err != nil {
				t.Fatal(err)
			}
		}, "damaged"},
	}
	openers := []struct {
		name string
		open func(s *Spool, id ID) (io.ReadCloser, error)
	}{
		{"Lookup", func(s *Spool, id ID) (io.ReadCloser, error) {
			_, r, _, err := s.Lookup(id)
			return r, err
		}},
		{"OpenBody", (*Spool).OpenBody},
	}
	for _, tt := range tests {
		for _, opener := range openers {
			t.Run(opener.name+"/"+strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
				t.Parallel()
				te := newTestEnv(t, Options{ReadyFiles: 4})
				waitReady(t, te.s, 4)
				id := put(t, te.s, body, "a@x")
				r, err := opener.open(te.s, id)
				if err != nil {
					t.Fatal(err)
				}
				defer r.Close()
				tt.change(t, te, id, filepath.Join(te.dir, dirBody, string(id)+extBody))
				got, err := io.ReadAll(r)
				switch tt.want {
				case "body":
					if err != nil || string(got) != body {
						t.Errorf("read: %d bytes, %v; want the message", len(got), err)
					}
				case "delivered":
					if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "delivered while") {
						t.Errorf("read: %v, want ErrNotFound saying it was delivered", err)
					}
				case "damaged":
					if !errors.Is(err, ErrCorrupt) {
						t.Errorf("read: %v, want ErrCorrupt", err)
					}
				}
			})
		}
	}
}

// keep has the file of id, a delivered message, kept for reuse, and
// returns its name (the one .reuse file in body/).
func keep(t *testing.T, te *testEnv, id ID) string {
	t.Helper()
	if !te.s.ready.reuse(id) {
		t.Fatal("the delivered message's file was not kept")
	}
	kept, err := filepath.Glob(filepath.Join(te.dir, dirBody, "*"+extReuse))
	if err != nil || len(kept) != 1 {
		t.Fatalf("files kept for reuse: %v, %v", kept, err)
	}
	return kept[0]
}

// overwriteStart changes the first bytes of the file name in place.
func overwriteStart(t *testing.T, name string) {
	t.Helper()
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("Subject: changed"), 0); err != nil {
		t.Fatal(err)
	}
}

// opLog records, in order, the FS calls that make a kept file's mark
// durable before its new name is.
type opLog struct {
	FS
	mu  sync.Mutex
	ops []string
}

func (f *opLog) add(op string) {
	f.mu.Lock()
	f.ops = append(f.ops, op)
	f.mu.Unlock()
}

func (f *opLog) Settle(name string) error {
	err := f.FS.Settle(name)
	f.add("settle " + filepath.Base(name))
	return err
}

func (f *opLog) SyncDir(name string) error {
	err := f.FS.SyncDir(name)
	f.add("sync " + filepath.Base(name))
	return err
}

func (f *opLog) RenameFresh(oldpath, newpath string) error {
	f.add("rename " + filepath.Base(oldpath) + " " + filepath.Base(newpath))
	return f.FS.RenameFresh(oldpath, newpath)
}

// TestRefillMakesMarksDurableBeforeRenaming: a kept file goes back into
// the pool under a fresh ID only after its reuse mark was settled and
// body/ synced since, so that a power failure cannot leave the delivered
// message under a name that is read as a message.
func TestRefillMakesMarksDurableBeforeRenaming(t *testing.T) {
	t.Parallel()
	fsys := &opLog{FS: OSFS()}
	deliverNumbered(t, fsys, 12)
	fsys.mu.Lock()
	ops := slices.Clone(fsys.ops)
	fsys.mu.Unlock()
	refills := 0
	for i, op := range ops {
		f := strings.Fields(op)
		if f[0] != "rename" || !strings.HasSuffix(f[1], extReuse) {
			continue
		}
		refills++
		settled := slices.Index(ops[:i], "settle "+f[1])
		if settled < 0 {
			t.Errorf("%s renamed to %s with its mark never settled; calls: %q", f[1], f[2], ops[:i+1])
			continue
		}
		if !slices.Contains(ops[settled:i], "sync "+dirBody) {
			t.Errorf("%s renamed to %s with no sync of body/ since its mark was settled; calls: %q", f[1], f[2], ops[settled:i+1])
		}
	}
	if refills == 0 {
		t.Fatalf("no kept file went back into the pool; calls: %q", ops)
	}
}

// settleFails fails every Settle.
type settleFails struct{ FS }

func (settleFails) Settle(name string) error {
	return &os.PathError{Op: "settle", Path: name, Err: syscall.EIO}
}

// TestRefillReportsWhatFails: a kept file whose mark cannot be settled is
// not handed out again, and the refill says why, as it does for a file it
// cannot create.
func TestRefillReportsWhatFails(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{FS: settleFails{OSFS()}, ReadyFiles: 2})
	waitReady(t, te.s, 2)
	d := &deliverer{}
	run(t, te.s, d)
	deliverInTurn(t, te, d, []string{"Subject: 1\r\n\r\nbody 1\r\n", "Subject: 2\r\n\r\nbody 2\r\n", "Subject: 3\r\n\r\nbody 3\r\n"})
	ev := te.ev.wait(t, EventError, "")
	if !errors.Is(ev.Err, syscall.EIO) || !strings.Contains(ev.Err.Error(), "prepare body files") {
		t.Errorf("event: %v, want the refill's settle error", ev.Err)
	}
}

// TestDeliveredFileUnderAFreshIDIsNotDelivered: where a power failure
// kept a kept file's rename but lost its mark (a copy-on-write file
// system), the file holds a delivered message under a fresh ID; its
// trailer names the other ID, so it is quarantined, never delivered.
func TestDeliveredFileUnderAFreshIDIsNotDelivered(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	delivered := put(t, te.s, "Subject: delivered\r\n\r\nbody\r\n", "a@x")
	te.s.Close()
	fresh := newID(te.clock.Now())
	if err := os.Rename(filepath.Join(te.dir, dirBody, string(delivered)+extBody), filepath.Join(te.dir, dirBody, string(fresh)+extBody)); err != nil {
		t.Fatal(err)
	}
	te.ev = newEvents()
	s := te.open(t, Options{})
	d := &deliverer{}
	run(t, s, d)
	if ev := te.ev.wait(t, EventCorrupt, ""); !errors.Is(ev.Err, ErrCorrupt) {
		t.Errorf("corrupt event: %v, want ErrCorrupt", ev.Err)
	}
	if calls := d.Calls(); len(calls) != 0 {
		t.Errorf("%d deliveries, want none", len(calls))
	}
	if names := files(t, te.dir, dirCorrupt); len(names) != 1 {
		t.Errorf("quarantined %v, want the one file", names)
	}
}
