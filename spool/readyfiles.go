package spool

import (
	"fmt"
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
// Reuse marks its footer, so that it is no message from then on, and the
// refill settles that mark (sync_file_range: a write, no flush), renames
// the file to a fresh ID and has it in the same directory fsync as the
// files it creates. A Put then overwrites it and cuts off what is left.
// That spares an unlink and a create per message, and the freeing and
// allocating of its inode and blocks: on a file system mounted with
// discard, a TRIM per delivered message. (BenchmarkRelayEndToEnd, no DKIM,
// c = 10, against removing and creating, five interleaved runs: +21 %
// msg/s, p = 0.016; discards per message 1.01 → 0.1.)
//
// A ready file that is never filled is empty or marked: what a Put cut
// short before its first byte leaves. Close removes the ones left. After a
// crash, Open's recovery looks at the newest never-attempted files (ready
// files are among them) and removes those; any it did not look at (a
// delivered message's file marked but not yet renamed keeps the old ID)
// is removed as such at its first attempt. If a power failure undoes the
// mark but not the rename (on a copy-on-write file system, where a write
// in place needs metadata), the file holds a delivered message under
// another ID, which the recovery quarantines rather than delivers.

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
	stale  []ID          // to remove
	reused []ID          // delivered messages' files marked by Reuse, to rename into the pool
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
		r.stale = append(r.stale, r.ready[0].id)
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
// the pool wants one and FS.Reuse takes it. False leaves the file as it
// was, for the caller to remove.
func (r *readyFiles) reuse(id ID) bool {
	r.mu.Lock()
	// Up to twice the pool: the files of messages delivered meanwhile
	// come back in a stream, and wait for the next refill's rename.
	wanted := !r.closed && len(r.ready)+len(r.reused) < 2*r.want
	r.mu.Unlock()
	if !wanted || r.s.fs.Reuse(r.s.path(dirBody, string(id)+extBody), maxReusedSize) != nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false // the refill has stopped: the caller removes it
	}
	r.reused = append(r.reused, id)
	if len(r.ready) <= r.want/2 {
		r.kick()
	}
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
		r.stale = append(r.stale, id)
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
				r.stale = append(r.stale, f.id)
			}
			for id := range r.handed {
				r.stale = append(r.stale, id)
			}
			r.stale = append(r.stale, r.reused...)
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
	for _, id := range stale {
		r.s.fs.Remove(r.s.path(dirBody, string(id)+extBody))
	}
}

// fill brings the pool to want files, the delivered messages' files kept
// for reuse first, then syncs body/ once for all of them before they are
// handed out. While such files come in, new ones are created only to keep
// the pool half full: the next delivered messages bring the rest.
func (r *readyFiles) fill() error {
	r.mu.Lock()
	n := r.want - len(r.ready)
	reused := r.reused[:min(n, len(r.reused))]
	r.reused = r.reused[len(reused):]
	create := n - len(reused)
	if len(reused) > 0 {
		create = r.want/2 - len(r.ready) - len(reused)
	}
	r.mu.Unlock()
	var made []readyFile
	var err error
	for _, old := range reused {
		oldName := r.s.path(dirBody, string(old)+extBody)
		now := r.s.now()
		id := newID(now)
		// The mark is written before the new name can be durable, or a
		// crash could leave the delivered message under the new name.
		if r.s.fs.Settle(oldName) != nil || r.s.fs.Rename(oldName, r.s.path(dirBody, string(id)+extBody)) != nil {
			r.mu.Lock()
			r.stale = append(r.stale, old)
			r.mu.Unlock()
			continue
		}
		made = append(made, readyFile{id: id, made: now})
	}
	for range create {
		now := r.s.now()
		id := newID(now)
		f, cerr := r.s.fs.Create(r.s.path(dirBody, string(id)+extBody))
		if cerr != nil {
			err = cerr
			break
		}
		if cerr := f.Close(); cerr != nil {
			r.mu.Lock()
			r.stale = append(r.stale, id)
			r.mu.Unlock()
			err = cerr
			break
		}
		made = append(made, readyFile{id: id, made: now})
	}
	if len(made) > 0 {
		if serr := r.s.bodySync.sync(); serr != nil {
			r.mu.Lock()
			for _, f := range made {
				r.stale = append(r.stale, f.id)
			}
			r.mu.Unlock()
			return fmt.Errorf("sync body directory: %w", serr)
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
		r.stale = append(r.stale, f.id)
	}
	r.mu.Unlock()
	return err
}
