package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

const trailerTestBody = "Subject: trailer\r\n\r\nthe body that was accepted\r\n"

// storedFile reads id's body file as Put left it.
func storedFile(t *testing.T, dir string, id ID) (path string, data []byte) {
	t.Helper()
	path = filepath.Join(dir, dirBody, string(id)+extBody)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, data
}

// damagedAfterRestart queues trailerTestBody, stops the spool, replaces its
// one file with what damage makes of it (as a crash or the disk might),
// and opens the spool again.
func damagedAfterRestart(t *testing.T, damage func(data []byte) []byte) (*testEnv, ID, *Spool) {
	t.Helper()
	te := newTestEnv(t, Options{})
	id := put(t, te.s, trailerTestBody, "a@x")
	te.s.Close()
	path, data := storedFile(t, te.dir, id)
	writeFile(t, path, string(damage(data)))
	return te, id, te.open(t, Options{})
}

// TestPutWritesOneFile: a Put leaves the body, its metadata and a footer in
// one file and nothing in queue/.
func TestPutWritesOneFile(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	id := put(t, te.s, trailerTestBody, "a@x", "b@y")
	_, data := storedFile(t, te.dir, id)
	if !bytes.HasPrefix(data, []byte(trailerTestBody)) {
		t.Fatalf("body file does not start with the body: %q", data)
	}
	metaJSON, state, need := parseTrailer(data, int64(len(data)))
	if state != trailerOK || need != 0 {
		t.Fatalf("trailer state %v, need %d", state, need)
	}
	m, err := decodeMessage(metaJSON, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != len(trailerTestBody)+len(metaJSON)+footerSize {
		t.Errorf("file of %d bytes, want body %d + metadata %d + footer %d", len(data), len(trailerTestBody), len(metaJSON), footerSize)
	}
	if m.Size != int64(len(trailerTestBody)) || len(m.Rcpts) != 2 || !strings.HasPrefix(m.BodySum, bodySumPrefix) {
		t.Errorf("trailer metadata = %+v", m)
	}
	if got := files(t, te.dir, dirQueue); len(got) != 0 {
		t.Errorf("queue/ = %v after a Put, want nothing", got)
	}
}

// TestTrailerCrashStates: what a crash can leave of a Put's one file, and
// what Open makes of it. A file whose trailer is not whole was never
// acknowledged and is removed; a whole trailer whose checksum fails is
// damage and is kept for the operator; neither is delivered.
func TestTrailerCrashStates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		damage func(data []byte, bodyLen int) []byte
		want   string // EventRemovedTemp, EventCorrupt or EventDelivered
	}{
		{"whole", func(d []byte, _ int) []byte { return d }, EventDelivered},
		{"body only", func(d []byte, n int) []byte { return d[:n] }, EventRemovedTemp},
		{"half the body", func(d []byte, n int) []byte { return d[:n/2] }, EventRemovedTemp},
		{"empty", func([]byte, int) []byte { return nil }, EventRemovedTemp},
		{"trailer cut short", func(d []byte, _ int) []byte { return d[:len(d)-3] }, EventRemovedTemp},
		{"footer zeroed", func(d []byte, _ int) []byte {
			d = bytes.Clone(d)
			clear(d[len(d)-footerSize:])
			return d
		}, EventRemovedTemp},
		{"metadata changed", func(d []byte, n int) []byte {
			d = bytes.Clone(d)
			d[n+3] ^= 0x01
			return d
		}, EventCorrupt},
		{"length out of range", func(d []byte, _ int) []byte {
			d = bytes.Clone(d)
			copy(d[len(d)-8:], []byte{0x7f, 0xff, 0xff, 0xff})
			return d
		}, EventCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			te, id, s := damagedAfterRestart(t, func(d []byte) []byte { return tt.damage(d, len(trailerTestBody)) })
			d := &deliverer{}
			run(t, s, d)
			ev := te.ev.wait(t, tt.want, id)
			if tt.want == EventDelivered {
				if calls := d.Calls(); len(calls) != 1 || calls[0].body != trailerTestBody {
					t.Errorf("delivered %+v, want the accepted body once", calls)
				}
				return
			}
			if tt.want == EventCorrupt && !errors.Is(ev.Err, ErrCorrupt) {
				t.Errorf("event error %v, want ErrCorrupt", ev.Err)
			}
			if calls := d.Calls(); len(calls) != 0 {
				t.Errorf("delivered %+v", calls)
			}
			wantCorrupt := 0
			if tt.want == EventCorrupt {
				wantCorrupt = 1
			}
			if got := files(t, te.dir, dirCorrupt); len(got) != wantCorrupt {
				t.Errorf("corrupt/ = %v, want %d file", got, wantCorrupt)
			}
			assertEmptySpool(t, te.dir)
		})
	}
}

// TestDamagedBodyIsNeverDelivered: a whole trailer after a body that is not
// the one accepted (blocks reach the disk in any order, so a crash before
// the fsync has finished can leave that) is told by the body's length and
// sum when it is read: the message is quarantined with its body, no
// deliverer receives it whole, and it is not retried.
func TestDamagedBodyIsNeverDelivered(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		damage func(body []byte) []byte
	}{
		{"zeros", func(b []byte) []byte { return make([]byte, len(b)) }},
		{"one byte changed", func(b []byte) []byte {
			b = bytes.Clone(b)
			b[len(b)-4] ^= 0x20
			return b
		}},
		{"cut short", func(b []byte) []byte { return b[:len(b)/2] }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := len(trailerTestBody)
			te, id, s := damagedAfterRestart(t, func(d []byte) []byte {
				return append(tt.damage(bytes.Clone(d[:n])), d[n:]...)
			})
			d := &deliverer{}
			run(t, s, d)
			ev := te.ev.wait(t, EventCorrupt, id)
			if !errors.Is(ev.Err, ErrCorrupt) || !strings.Contains(ev.Err.Error(), string(id)) {
				t.Errorf("event error %v, want ErrCorrupt naming %s", ev.Err, id)
			}
			// The test deliverer records a call only once it has read the
			// body to its end without an error.
			if calls := d.Calls(); len(calls) != 0 {
				t.Errorf("damaged body delivered: %+v", calls)
			}
			for _, k := range te.ev.kinds() {
				if k == EventDeferred {
					t.Errorf("a damaged body was retried: %v", te.ev.kinds())
				}
			}
			if got := files(t, te.dir, dirCorrupt); len(got) != 1 {
				t.Errorf("corrupt/ = %v, want the body file", got)
			}
			assertEmptySpool(t, te.dir)
		})
	}
}

// TestBodyReadChecksTheSum: `queue show` reads through the same check, so
// an operator is not shown a damaged body as the message.
func TestBodyReadChecksTheSum(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	id := put(t, te.s, trailerTestBody, "a@x")
	path, data := storedFile(t, te.dir, id)
	n := len(trailerTestBody)
	writeFile(t, path, strings.Repeat("\x00", n)+string(data[n:]))

	_, body, _, err := te.s.Lookup(id)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	if _, err := io.ReadAll(body); !errors.Is(err, ErrCorrupt) {
		t.Errorf("reading a zeroed body: %v, want ErrCorrupt", err)
	}
}

// TestOldLayoutStillDelivered: a spool written by versions that kept the
// metadata in a file of its own from the start (and the body without a
// trailer) is delivered as it was accepted.
func TestOldLayoutStillDelivered(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	te.s.Close()
	id := newID(te.clock.Now())
	m := testMessage(id, Pending)
	m.Size = int64(len(trailerTestBody))
	writeFile(t, filepath.Join(te.dir, dirQueue, string(id)+extMeta), metaJSON(t, m))
	writeFile(t, filepath.Join(te.dir, dirBody, string(id)+extBody), trailerTestBody)

	s := te.open(t, Options{})
	if list, err := s.List(); err != nil || len(list) != 1 || list[0].ID != id {
		t.Fatalf("List = %v, %v", list, err)
	}
	d := &deliverer{}
	run(t, s, d)
	te.ev.wait(t, EventDelivered, id)
	if calls := d.Calls(); len(calls) != 1 || calls[0].body != trailerTestBody {
		t.Errorf("delivered %+v", calls)
	}
	assertEmptySpool(t, te.dir)
}

// TestMetadataFileWins: after an attempt the metadata is rewritten in
// queue/; the trailer, never rewritten, no longer counts.
func TestMetadataFileWins(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	id := put(t, te.s, trailerTestBody, "a@x", "b@y")
	m, err := te.s.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	m.Rcpts[0].State = Delivered
	m.Attempts = 1
	if err := te.s.writeMeta(m, dirQueue, te.s.queueSync); err != nil {
		t.Fatal(err)
	}
	te.s.Close()
	s := te.open(t, Options{})
	got, err := s.Get(id)
	if err != nil || got.Attempts != 1 || len(got.Pending()) != 1 {
		t.Fatalf("Get = %+v, %v; want the rewritten metadata", got, err)
	}
	d := &deliverer{}
	run(t, s, d)
	te.ev.wait(t, EventDelivered, id)
	if calls := d.Calls(); len(calls) != 1 || calls[0].body != trailerTestBody || len(calls[0].to) != 1 || calls[0].to[0] != "b@y" {
		t.Errorf("delivered %+v, want the body once, to b@y only", calls)
	}
	assertEmptySpool(t, te.dir)
}

// TestLongTrailer: metadata longer than the first read from the end of the
// file (many recipients) takes a second read.
func TestLongTrailer(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	var to []string
	for i := range 400 {
		to = append(to, fmt.Sprintf("recipient-number-%04d@example.org", i))
	}
	id := put(t, te.s, trailerTestBody, to...)
	_, data := storedFile(t, te.dir, id)
	if len(data)-len(trailerTestBody) <= trailerReadAhead {
		t.Fatalf("trailer of %d bytes does not exceed the first read", len(data)-len(trailerTestBody))
	}
	te.s.Close()
	s := te.open(t, Options{})
	m, err := s.Get(id)
	if err != nil || len(m.Rcpts) != len(to) {
		t.Fatalf("Get = %v recipients, %v", len(m.Rcpts), err)
	}
}

// TestWalkSeesBothLayouts: `queue list` finds messages by their body file
// and by their metadata file, each once, and skips a Put still writing.
func TestWalkSeesBothLayouts(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	trailerOnly := put(t, te.s, trailerTestBody, "a@x")
	rewritten := put(t, te.s, trailerTestBody, "a@x")
	m, err := te.s.Get(rewritten)
	if err != nil {
		t.Fatal(err)
	}
	if err := te.s.writeMeta(m, dirQueue, te.s.queueSync); err != nil {
		t.Fatal(err)
	}
	writing := newID(te.clock.Now())
	writeFile(t, filepath.Join(te.dir, dirBody, string(writing)+extBody), "Subject: x\r\n\r\nhalf")

	ro, err := Open(te.dir, Options{ReadOnly: true, FS: &opCounter{FS: OSFS()}})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	var got []ID
	if err := ro.Walk(func(m *Message) error { got = append(got, m.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	// One metadata file read (the rewritten one), two trailers (the
	// other message and the Put still writing), nothing asked twice.
	if c := ro.fs.(*opCounter); c.metaReads.Load() != 1 || c.tailReads.Load() != 2 {
		t.Errorf("Walk read %d metadata files and %d trailers, want 1 and 2", c.metaReads.Load(), c.tailReads.Load())
	}
	want := []ID{trailerOnly, rewritten}
	if cmpID(want[0], want[1]) > 0 {
		want[0], want[1] = want[1], want[0]
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Walk = %v, want %v", got, want)
	}
	if _, err := te.s.Get(writing); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of a body without its trailer = %v, want ErrNotFound", err)
	}
}

// TestBodySumOfEmptyBody: an empty body has a sum too, and reads back empty.
func TestBodySumOfEmptyBody(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	id, err := te.s.Put(context.Background(), Envelope{To: []string{"a@x"}}, strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	m, err := te.s.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if m.BodySum != "crc32c:00000000" {
		t.Errorf("BodySum of an empty body = %q", m.BodySum)
	}
	body, err := te.s.OpenBody(id)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	if b, err := io.ReadAll(body); err != nil || len(b) != 0 {
		t.Errorf("read %q, %v", b, err)
	}
}

// TestDeleteDuringBodyWrite: a Delete that comes while a Put is still
// writing the body (no trailer yet) finds no message and removes nothing:
// the Put then still makes its message durable, and it is delivered.
func TestDeleteDuringBodyWrite(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	id := te.s.NewID()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- te.s.PutID(context.Background(), id, Envelope{To: []string{"a@x"}}, pr, nil)
	}()
	if _, err := pw.Write([]byte("Subject: x\r\n\r\nfirst half, ")); err != nil {
		t.Fatal(err)
	}
	// The pipe handed the bytes over: the body file exists.
	if err := te.s.Delete(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete during the body = %v, want ErrNotFound", err)
	}
	pw.Write([]byte("second half\r\n"))
	pw.Close()
	if err := <-done; err != nil {
		t.Fatalf("Put: %v", err)
	}
	d := &deliverer{}
	run(t, te.s, d)
	te.ev.wait(t, EventDelivered, id)
	if calls := d.Calls(); len(calls) != 1 || calls[0].body != "Subject: x\r\n\r\nfirst half, second half\r\n" {
		t.Errorf("delivered %+v", calls)
	}
}

// removeRecorder records the paths removed, in order.
type removeRecorder struct {
	FS
	mu      sync.Mutex
	removed []string
}

func (r *removeRecorder) Remove(name string) error {
	r.mu.Lock()
	r.removed = append(r.removed, filepath.Base(filepath.Dir(name))+"/"+filepath.Ext(name))
	r.mu.Unlock()
	return r.FS.Remove(name)
}

// TestRemovalOrder: the body file goes before the metadata file, so that a
// crash in between cannot leave the first metadata (every recipient
// pending) for Open to deliver again; a message that never had a metadata
// file costs one unlink.
func TestRemovalOrder(t *testing.T) {
	t.Parallel()
	rec := &removeRecorder{FS: OSFS()}
	te := newTestEnv(t, Options{FS: rec})
	id := put(t, te.s, trailerTestBody, "a@x")
	m, err := te.s.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	// As a deferred attempt does: the scheduler learns of the file first.
	te.s.mu.Lock()
	te.s.items[id].metaFile = true
	te.s.mu.Unlock()
	if err := te.s.writeMeta(m, dirQueue, te.s.queueSync); err != nil {
		t.Fatal(err)
	}
	removed := func() string {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		r := fmt.Sprint(rec.removed)
		rec.removed = nil
		return r
	}
	removed()
	run(t, te.s, &deliverer{})
	te.ev.wait(t, EventDelivered, id)
	waitGone(t, te.s, id)
	if got := removed(); got != "[body/.eml queue/.json]" {
		t.Errorf("removed %v, want the body file, then the metadata file", got)
	}

	only := put(t, te.s, trailerTestBody, "a@x")
	te.ev.wait(t, EventDelivered, only)
	waitGone(t, te.s, only)
	if got := removed(); got != "[body/.eml]" {
		t.Errorf("removed %v for a message without a metadata file, want its body file only", got)
	}
}

// countingDeliverer reads exactly Size bytes, as a deliverer using BDAT
// would, and records what it got.
type countingDeliverer struct {
	mu   sync.Mutex
	got  []string
	errs []error
}

func (d *countingDeliverer) Deliver(_ context.Context, _ ID, env Envelope, to []string, body io.Reader) ([]error, error) {
	buf := make([]byte, env.Size)
	_, err := io.ReadFull(body, buf)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.errs = append(d.errs, err)
		return nil, err
	}
	d.got = append(d.got, string(buf))
	return make([]error, len(to)), nil
}

// TestDamagedBodyWithheldFromSizeReaders: a deliverer that stops after
// Size bytes never has the whole of a damaged body either.
func TestDamagedBodyWithheldFromSizeReaders(t *testing.T) {
	t.Parallel()
	te, id, s := damagedAfterRestart(t, func(d []byte) []byte {
		d[len(trailerTestBody)-3] ^= 0x20
		return d
	})
	d := &countingDeliverer{}
	run(t, s, d)
	te.ev.wait(t, EventCorrupt, id)
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.got) != 0 || len(d.errs) != 1 || !errors.Is(d.errs[0], ErrCorrupt) {
		t.Errorf("deliverer got %q, errors %v; want one ErrCorrupt and nothing whole", d.got, d.errs)
	}
}

// TestHeaderMustBeUTF8: JSON would change invalid UTF-8 in the Header, and
// with it where the body ends in the file; Put refuses it.
func TestHeaderMustBeUTF8(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	header := func() ([]byte, error) { return []byte("X-Bad: \xff\r\n"), nil }
	err := te.s.PutID(context.Background(), te.s.NewID(), Envelope{To: []string{"a@x"}}, strings.NewReader("body"), header)
	if err == nil || !strings.Contains(err.Error(), "UTF-8") {
		t.Errorf("Put with a non-UTF-8 header = %v", err)
	}
	assertEmptySpool(t, te.dir)
}
