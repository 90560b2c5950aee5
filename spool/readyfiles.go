package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"
)

// A message's file is created under its final name, and the entry must be
// durable before the 250: a Put that creates its file also waits for an
// fsync of body/. With Options.ReadyFiles, the spool keeps that many empty
// body files created and body/ synced ahead of the messages that will fill
// them; NewID hands out the name of one, and PutID fills it and fsyncs the
// file alone. A batch of creations then shares one directory fsync, made
// off the submission's path.
//
// A delivered message's file is kept for a later message rather than
// removed, when the pool is short and the file small (maxReusedSize):
// Reuse marks its footer, so that it is no message from then on, and it
// is renamed at once to <fresh id>.reuse. The refill settles the marks
// (sync_file_range: a write, no flush), flushes them with an fsync of
// body/, renames the files to fresh IDs and has them in the directory
// fsync it does for the files it creates. A Put then overwrites one and
// cuts off what is left. That spares an unlink and a create per message,
// and the freeing and allocating of its inode and blocks: on a file
// system mounted with discard, a TRIM per delivered message.
// (BenchmarkRelayEndToEnd against removing and creating, six interleaved
// runs: +11 % msg/s geomean; discards per message 1.01 → 0.03–0.06.)
//
// A ready file that is never filled is empty or marked: what a Put cut
// short before its first byte leaves. Close removes the ones left. After a
// crash, Open's recovery removes the .reuse files by name, and looks at
// the newest never-attempted files (ready files are among them) and
// removes those that are empty or marked; any other is removed as such at
// its first attempt. A marked file that kept its old name (a crash between
// the mark and the rename) is one of those; if the mark was lost too, it
// is the delivered message, delivered again, as after an unlink that a
// power failure undid. On a copy-on-write file system, where a write in
// place needs metadata that sync_file_range does not write, a power
// failure could keep a rename and lose its mark: the file then holds a
// delivered message under another ID, which its first attempt quarantines
// rather than delivers (its trailer names the other ID).
//
// A process that opened a delivered message's file just before it was
// reused (a `queue show` racing the delivery) may read a later message's
// bytes: the recorded length and sum make a read to the body's end fail
// rather than return them (a reader that stops before the end gets no
// such check), and the readers of Lookup and OpenBody, finding the file
// now ends in the reuse mark or another message's trailer, or in no
// trailer at another size than they opened it at, say it was delivered
// meanwhile, not damaged.

// maxReusedSize is the largest delivered message's file kept for a later
// message; a bigger one is removed (ready files should not hold disk).
const maxReusedSize = 64 << 10

// maxReadyAge bounds how much older than its message a ready file's name
// (its ID, which dates it) may be; older ones are replaced.
const maxReadyAge = 30 * time.Second

type readyFile struct {
	id   ID
	made time.Time
}

// readyFiles is the pool of ready files and the goroutine that refills it.
type readyFiles struct {
	s    *Spool
	want int

	mu     sync.Mutex
	closed bool
	ready  []readyFile   // created, and body/ synced since; oldest first
	handed map[ID]bool   // given out by NewID, not yet claimed by PutID
	stale  []string      // names in body/ to remove
	reused []ID          // delivered messages' files marked by Reuse, as <id>.reuse, to rename into the pool
	refill chan struct{} // capacity 1
}

func newReadyFiles(s *Spool, want int) *readyFiles {
	return &readyFiles{s: s, want: want, handed: map[ID]bool{}, refill: make(chan struct{}, 1)}
}

// take hands out the name of a ready file, if there is one.
func (r *readyFiles) take(now time.Time) (ID, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return "", false
	}
	for len(r.ready) > 0 && now.Sub(r.ready[0].made) > maxReadyAge {
		r.stale = append(r.stale, string(r.ready[0].id)+extBody)
		r.ready = r.ready[1:]
	}
	if len(r.ready) <= r.want/2 {
		r.kick()
	}
	if len(r.ready) == 0 {
		return "", false
	}
	id := r.ready[0].id
	r.ready = r.ready[1:]
	r.handed[id] = true
	return id, true
}

// claim reports whether id names a ready file handed out by take, which
// the caller now fills.
func (r *readyFiles) claim(id ID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.handed[id] {
		return false
	}
	delete(r.handed, id)
	return true
}

// drop removes a claimed file that could not be filled (an error path).
func (r *readyFiles) drop(id ID) {
	r.s.fs.Remove(r.s.path(dirBody, string(id)+extBody))
	r.kick()
}

// reuse keeps the file of id, a delivered message, for a later message if
// the pool wants one and FS.Reuse takes it. The marked file is renamed at
// once to <fresh id>.reuse: no longer under the delivered message's name,
// and under one that the recovery removes by name after a crash, never
// counting it as queued. False leaves the file for the caller to remove.
func (r *readyFiles) reuse(id ID) bool {
	r.mu.Lock()
	// Up to twice the pool: the files of messages delivered meanwhile
	// come back in a stream, and wait for the next refill.
	wanted := !r.closed && len(r.ready)+len(r.reused) < 2*r.want
	r.mu.Unlock()
	if !wanted {
		return false
	}
	name := r.s.path(dirBody, string(id)+extBody)
	if r.s.fs.Reuse(name, maxReusedSize) != nil {
		return false
	}
	kept, _, err := r.renameFresh(name, extReuse)
	if err != nil {
		return false
	}
	keptName := r.s.path(dirBody, string(kept)+extReuse)
	r.mu.Lock()
	if r.closed {
		// The refill has stopped and will not remove it.
		r.mu.Unlock()
		r.s.fs.Remove(keptName)
		return true
	}
	r.reused = append(r.reused, kept)
	if len(r.ready) <= r.want/2 {
		r.kick()
	}
	r.mu.Unlock()
	return true
}

// giveBack returns a handed-out file that will not be filled.
func (r *readyFiles) giveBack(id ID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.handed[id] {
		return
	}
	delete(r.handed, id)
	if r.closed {
		r.stale = append(r.stale, string(id)+extBody)
		return
	}
	// Made before the rest: it goes first, and ages out first.
	r.ready = append([]readyFile{{id: id, made: id.Time()}}, r.ready...)
}

func (r *readyFiles) kick() {
	select {
	case r.refill <- struct{}{}:
	default:
	}
}

// run refills the pool until the spool closes, then removes the files
// that were never filled.
func (r *readyFiles) run() {
	defer r.s.ops.Done()
	r.kick()
	failing := false
	for {
		select {
		case <-r.s.done:
			r.mu.Lock()
			r.closed = true
			for _, f := range r.ready {
				r.stale = append(r.stale, string(f.id)+extBody)
			}
			for id := range r.handed {
				r.stale = append(r.stale, string(id)+extBody)
			}
			for _, id := range r.reused {
				r.stale = append(r.stale, string(id)+extReuse)
			}
			r.ready, r.handed, r.reused = nil, map[ID]bool{}, nil
			r.mu.Unlock()
			r.removeStale()
			return
		case <-r.refill:
		}
		r.removeStale()
		err := r.fill()
		if err != nil && !failing {
			// Once until it works again (a full disk would otherwise say
			// so at every other message). Puts create their own files
			// meanwhile, and report what fails for them.
			r.s.event(Event{Kind: EventError, Err: fmt.Errorf("spool: prepare body files: %w", err)})
		}
		failing = err != nil
	}
}

// removeStale removes files that aged out or were never filled. Nothing
// is synced: if a crash undoes a removal, the file is an empty one, which
// its first attempt removes again.
func (r *readyFiles) removeStale() {
	r.mu.Lock()
	stale := r.stale
	r.stale = nil
	r.mu.Unlock()
	for _, name := range stale {
		r.s.fs.Remove(r.s.path(dirBody, name))
	}
}

// fill brings the pool to want files, the delivered messages' files kept
// for reuse first, then syncs body/ once for all of them before they are
// handed out. While such files come in, new ones are created only to keep
// the pool half full: the next delivered messages bring the rest.
func (r *readyFiles) fill() error {
	r.mu.Lock()
	// Files given back may have filled the pool beyond want.
	n := max(r.want-len(r.ready), 0)
	k := min(n, len(r.reused))
	reused := r.reused[:k]
	r.reused = r.reused[k:]
	create := n - k
	if k > 0 {
		create = r.want/2 - len(r.ready) - k
	}
	r.mu.Unlock()
	var made []readyFile
	var err error
	// A kept file's mark must be durable before its new name can be, or
	// a power failure could leave the delivered message under that name:
	// the marks are written out, flushed by an fsync of body/, and only
	// then are the files renamed.
	var settled []string // names in body/
	for _, kept := range reused {
		name := string(kept) + extReuse
		if serr := r.s.fs.Settle(r.s.path(dirBody, name)); serr != nil {
			r.discard(name)
			err = errors.Join(err, serr)
			continue
		}
		settled = append(settled, name)
	}
	if len(settled) > 0 {
		if serr := r.s.bodySync.sync(); serr != nil {
			for _, name := range settled {
				r.discard(name)
			}
			return errors.Join(err, fmt.Errorf("sync body directory: %w", serr))
		}
	}
	for _, name := range settled {
		id, now, rerr := r.renameFresh(r.s.path(dirBody, name), extBody)
		if rerr != nil {
			r.discard(name)
			err = errors.Join(err, rerr)
			continue
		}
		made = append(made, readyFile{id: id, made: now})
	}
	for range create {
		now := r.s.now()
		id := newID(now)
		f, cerr := r.s.fs.Create(r.s.path(dirBody, string(id)+extBody))
		if cerr != nil {
			err = errors.Join(err, cerr)
			break
		}
		if cerr := f.Close(); cerr != nil {
			r.discard(string(id) + extBody)
			err = errors.Join(err, cerr)
			break
		}
		made = append(made, readyFile{id: id, made: now})
	}
	if len(made) > 0 {
		if serr := r.s.bodySync.sync(); serr != nil {
			for _, f := range made {
				r.discard(string(f.id) + extBody)
			}
			return errors.Join(err, fmt.Errorf("sync body directory: %w", serr))
		}
	}
	r.mu.Lock()
	keep := 0
	if !r.closed {
		// Files given back meanwhile may have filled the pool.
		keep = min(len(made), max(r.want-len(r.ready), 0))
		r.ready = append(r.ready, made[:keep]...)
	}
	for _, f := range made[keep:] {
		r.stale = append(r.stale, string(f.id)+extBody)
	}
	r.mu.Unlock()
	return err
}

// renameFresh renames the file from to a fresh ID's name in body/, with
// extension ext, never over a file there: two IDs drawn alike (50 random
// bits a second) draw again.
func (r *readyFiles) renameFresh(from, ext string) (ID, time.Time, error) {
	var err error
	for range 3 {
		now := r.s.now()
		id := newID(now)
		if err = r.s.fs.RenameFresh(from, r.s.path(dirBody, string(id)+ext)); !errors.Is(err, fs.ErrExist) {
			return id, now, err
		}
	}
	return "", time.Time{}, err
}

// discard has the file name in body/ removed by the next removeStale.
func (r *readyFiles) discard(name string) {
	r.mu.Lock()
	r.stale = append(r.stale, name)
	r.mu.Unlock()
}
