package spool

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Subdirectories of the spool directory; see the package documentation.
const (
	dirTmp     = "tmp"
	dirBody    = "body"
	dirQueue   = "queue"
	dirFailed  = "failed"
	dirCorrupt = "corrupt"

	extBody = ".eml"
	extMeta = ".json"
	// extReuse names a delivered message's file in body/, marked and kept
	// for a later message, until the refill gives it an ID (readyfiles.go).
	extReuse = ".reuse"
)

var (
	// ErrLocked is returned (wrapped) by Open when another process holds the spool.
	ErrLocked = errors.New("spool: directory locked")
	// ErrNotFound is returned (wrapped) for an ID that is not queued.
	ErrNotFound = errors.New("spool: message not found")
	// ErrClosed is returned by operations on a closed spool.
	ErrClosed = errors.New("spool: closed")
	// ErrReadOnly is returned by operations that write, on a spool opened ReadOnly.
	ErrReadOnly = errors.New("spool: opened read-only")
	// ErrEmptyLeftover is wrapped by the Err of an EventRemovedTemp for a
	// body file made ready for a message (empty, or a delivered message's
	// kept for reuse) that a crash left unused, or an empty one of a
	// submission cut off before its first byte. No queued message was in
	// it. A crash leaves the pool's files, the kept files waiting for a
	// refill and those handed to submissions in progress: Open's recovery
	// removes those among the newest names at once (minRecentChecked), any
	// other (a submission slower than that many later ones) at its first
	// attempt, counted as queued until then.
	ErrEmptyLeftover = errors.New("spool: removed an empty body file")
)

// Options configure a Spool. The zero value is usable.
type Options struct {
	// Now is the clock; default time.Now. Tests inject a fake one.
	Now func() time.Time
	// MaxAge is how long a message is retried before it is given up and
	// moved to failed/; default 5 days.
	MaxAge time.Duration
	// Backoff is the wait after the 1st, 2nd, … failed attempt; after the
	// last entry the last one repeats. Default 1m, 5m, 15m, 1h. Each wait
	// gets ±10% jitter.
	Backoff []time.Duration
	// Workers is the number of concurrent deliveries; default 4.
	Workers int
	// Events, if set, receives one Event per decision (the audit log). It is
	// called from several goroutines at once and should not block long.
	Events func(Event)
	// FS is the file-system layer; default the operating system's.
	FS FS
	// ReadOnly opens the spool without locking it, cleaning it or creating
	// it, so that `queue list` / `queue show` can look at the spool of a
	// running server. Put, Delete and Run then fail with ErrReadOnly.
	ReadOnly bool
	// ReadyFiles is how many empty body files to keep created, with body/
	// synced, for NewID to hand out (readyfiles.go): a Put into one needs no
	// fsync of body/ of its own. 0, the default, creates each file in
	// its Put.
	ReadyFiles int
}

const (
	defaultMaxAge  = 5 * 24 * time.Hour
	defaultWorkers = 4
	// Large enough that a typical message is a handful of write(2)s, small
	// enough that a hundred concurrent Puts cost a few MiB, whatever the
	// message size.
	copyBufferSize = 32 << 10
)

func defaultBackoff() []time.Duration {
	return []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour}
}

func (o Options) withDefaults() (Options, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	switch {
	case o.MaxAge == 0:
		o.MaxAge = defaultMaxAge
	case o.MaxAge < 0:
		return o, fmt.Errorf("spool: MaxAge %v is negative", o.MaxAge)
	}
	if len(o.Backoff) == 0 {
		o.Backoff = defaultBackoff()
	} else {
		o.Backoff = slices.Clone(o.Backoff)
	}
	for _, b := range o.Backoff {
		if b <= 0 {
			return o, fmt.Errorf("spool: Backoff %v is not positive", b)
		}
	}
	if o.Workers <= 0 {
		o.Workers = defaultWorkers
	}
	if o.FS == nil {
		o.FS = osFS{}
	}
	return o, nil
}

// Spool is an open spool directory. Its methods are safe for concurrent use.
type Spool struct {
	dir  string
	opts Options
	fs   FS
	lock *os.File // nil when ReadOnly

	bodySync, queueSync, failedSync *dirSyncer
	bufs                            sync.Pool // *[]byte copy buffers for Put

	kick chan struct{} // wakes the scheduler; buffered 1
	done chan struct{} // closed by Close

	mu    sync.Mutex
	items map[ID]*item // every message of the active queue this process knows
	sched schedHeap    // the items not being delivered, by next attempt
	fresh int          // items holding their metadata in memory (maxFresh)
	// flushLoading: Flush was called while Open's recovery was loading the
	// queue, so what it loads afterwards is due at once too.
	flushLoading bool
	closed       bool
	running      bool
	// pausedUntil holds back all deliveries: the deliverer said its
	// upstream cannot be reached before then (see Deliverer).
	pausedUntil time.Time
	ops         sync.WaitGroup // Puts, Deletes and Run in progress; Close waits for them
	tailBufs    sync.Pool      // *[]byte of trailerReadAhead bytes, for loadTrailer
	ready       *readyFiles    // nil without Options.ReadyFiles

	// keyPaused holds back only the messages whose last attempt was
	// refused with that pause key (one upstream among several); see
	// pauseKeyed in deliver.go.
	keyPaused map[string]time.Time

	// recovered is closed when Open's recovery of what was queued before
	// has finished; recoverErr is its outcome. Put works before that, Run
	// and List wait for it.
	recovered  chan struct{}
	recoverErr error
}

// Open opens (creating it 0700 if needed) and locks the spool in dir. Only
// one process may have a spool open; a second Open fails with ErrLocked.
// Open lists what was queued before and returns; in the background it then
// removes leftovers of interrupted writes, quarantines what cannot be
// decoded (each reported as an Event) and loads the queue for Run. Reading
// every message's metadata takes seconds for a large queue, and a restarted
// relay must accept new mail at once: Put works right away, Run and List
// wait for the recovery.
func Open(dir string, opts Options) (*Spool, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Spool{
		dir:   dir,
		opts:  opts,
		fs:    opts.FS,
		items: make(map[ID]*item),
		kick:  make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	s.bodySync = newDirSyncer(s.fs, s.path(dirBody, ""))
	s.queueSync = newDirSyncer(s.fs, s.path(dirQueue, ""))
	s.failedSync = newDirSyncer(s.fs, s.path(dirFailed, ""))
	s.bufs.New = func() any { b := make([]byte, copyBufferSize); return &b }

	if opts.ReadOnly {
		if err := s.checkReadable(dirQueue); err != nil {
			return nil, fmt.Errorf("spool: open %s: %w", dir, err)
		}
		return s, nil
	}
	for _, sub := range []string{"", dirTmp, dirBody, dirQueue, dirFailed, dirCorrupt} {
		if err := s.fs.MkdirAll(s.path(sub, ""), 0o700); err != nil {
			return nil, fmt.Errorf("spool: create %s: %w", s.path(sub, ""), err)
		}
	}
	if s.lock, err = lockDir(filepath.Join(dir, "lock")); err != nil {
		return nil, err
	}
	// The listings are taken before any Put of this process can add to
	// them, so the recovery only ever judges files of earlier processes.
	snap, err := s.snapshot()
	if err != nil {
		s.lock.Close()
		return nil, err
	}
	if opts.ReadyFiles > 0 {
		// After the snapshot: the recovery never sees these files.
		s.ready = newReadyFiles(s, opts.ReadyFiles)
		s.ops.Add(1)
		go s.ready.run()
	}
	s.recovered = make(chan struct{})
	s.ops.Add(1)
	go func() {
		defer s.ops.Done()
		start := time.Now()
		loaded, err := s.recover(snap)
		s.recoverErr = err
		s.mu.Lock()
		s.flushLoading = false
		s.mu.Unlock()
		close(s.recovered)
		// After the close: whoever the event reaches (the daemon's log
		// line, a control reply) finds Loading() false.
		s.event(Event{Kind: EventLoaded, Queued: loaded, Duration: time.Since(start), Err: err})
		s.Kick()
	}()
	return s, nil
}

// checkReadable fails unless sub is a directory this process may read:
// opening it is enough, where listing it would read a whole queue.
func (s *Spool) checkReadable(sub string) error {
	opener, ok := s.fs.(dirOpener)
	if !ok {
		_, err := s.fs.ReadDirNames(s.path(sub, ""))
		return err
	}
	d, err := opener.openDir(s.path(sub, ""))
	if err != nil {
		return err
	}
	return d.Close()
}

// Loading reports whether Open's recovery is still loading the queue of an
// earlier process, so that Stats does not count all of it yet.
func (s *Spool) Loading() bool {
	if s.recovered == nil {
		return false
	}
	select {
	case <-s.recovered:
		return false
	default:
		return true
	}
}

// waitRecovered waits for Open's recovery (at once for a ReadOnly spool).
func (s *Spool) waitRecovered() error {
	if s.recovered == nil {
		return nil
	}
	<-s.recovered
	return s.recoverErr
}

// recoverySnapshot is what was in the spool when Open took it.
type recoverySnapshot struct {
	tmps, metas  []fs.DirEntry
	bodies       map[string]bool
	failedBodies map[string]bool
}

func (s *Spool) snapshot() (recoverySnapshot, error) {
	var snap recoverySnapshot
	var err error
	if snap.tmps, err = s.fs.ReadDir(s.path(dirTmp, "")); err != nil {
		return snap, fmt.Errorf("spool: read %s: %w", dirTmp, err)
	}
	if snap.bodies, err = s.nameSet(dirBody); err != nil {
		return snap, err
	}
	if snap.failedBodies, err = s.nameSet(dirFailed); err != nil {
		return snap, err
	}
	if snap.metas, err = s.fs.ReadDir(s.path(dirQueue, "")); err != nil {
		return snap, fmt.Errorf("spool: read %s: %w", dirQueue, err)
	}
	return snap, nil
}

// Close stops Run (as if its context were cancelled), waits for Puts and
// deliveries in progress, and releases the lock.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	s.mu.Unlock()
	s.ops.Wait()
	var errs []error
	for _, d := range []*dirSyncer{s.bodySync, s.queueSync, s.failedSync} {
		if err := d.close(); err != nil {
			errs = append(errs, fmt.Errorf("spool: close %s: %w", d.dir, err))
		}
	}
	if s.lock != nil {
		if err := s.lock.Close(); err != nil {
			errs = append(errs, fmt.Errorf("spool: release lock: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Dir returns the spool directory.
func (s *Spool) Dir() string { return s.dir }

func (s *Spool) path(sub, name string) string { return filepath.Join(s.dir, sub, name) }

func (s *Spool) now() time.Time { return s.opts.Now().UTC() }

func (s *Spool) event(e Event) {
	if s.opts.Events != nil {
		s.opts.Events(e)
	}
}

// beginOp registers a writing operation so that Close waits for it.
func (s *Spool) beginOp() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.opts.ReadOnly:
		return ErrReadOnly
	}
	s.ops.Add(1)
	return nil
}

// Put writes a message and returns once it is durable; only then may the
// caller acknowledge it. The body is streamed to disk, never held in
// memory. Any error means nothing was queued (the caller answers 451 4.3.0).
func (s *Spool) Put(ctx context.Context, env Envelope, body io.Reader) (ID, error) {
	id := s.NewID()
	if err := s.PutID(ctx, id, env, body, nil); err != nil {
		return "", err
	}
	return id, nil
}

// NewID returns a fresh message id, for a caller that must name the
// message inside its own body (the Received field) before it calls PutID.
// With Options.ReadyFiles it may name a file made ready for it: a caller
// that will not call PutID says so with DiscardID.
func (s *Spool) NewID() ID {
	if s.ready != nil {
		if id, ok := s.ready.take(s.now()); ok {
			return id
		}
	}
	return newID(s.now())
}

// DiscardID says that id, from NewID, will not be put (the message was
// refused before PutID), so that its ready file serves another. It does
// nothing after PutID, or for an id without a ready file.
func (s *Spool) DiscardID(id ID) {
	if s.ready != nil {
		s.ready.giveBack(id)
	}
}

// HeaderFunc returns header fields (each ending in CRLF) to put in front of
// the body. It is called once the body has been read to its end.
type HeaderFunc func() ([]byte, error)

// PutID is Put with an id from NewID and, when header is not nil, fields
// computed from the whole body (a signature) put in front of it.
func (s *Spool) PutID(ctx context.Context, id ID, env Envelope, body io.Reader, header HeaderFunc) (err error) {
	if _, err := ParseID(string(id)); err != nil {
		return fmt.Errorf("spool: put: %w", err)
	}
	if err := s.beginOp(); err != nil {
		return err
	}
	defer s.ops.Done()
	// A ready file named by id goes back to the pool if this returns
	// before filling it (a no-op once claimed below).
	defer s.DiscardID(id)
	if len(env.To) == 0 {
		return errors.New("spool: put: no recipients")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("spool: put: %w", err)
	}

	now := s.now()
	finalBody := s.path(dirBody, string(id)+extBody)

	// One file per message: the body, then its metadata as a trailer
	// (trailer.go), created under its final name and fsynced once. A body
	// file without a whole trailer is not a message (its first attempt after
	// a restart removes it), so a temp name and a rename would only cost
	// another directory operation. A file made ready for it (readyfiles.go)
	// exists already, durably.
	ready := s.ready != nil && s.ready.claim(id)
	var f File
	var readySize int64 // a reused file's: what is left of it is cut off
	if ready {
		if f, readySize, err = s.fs.OpenReady(finalBody); err != nil {
			s.ready.drop(id)
		}
	} else {
		f, err = s.fs.Create(finalBody)
	}
	if err != nil {
		return fmt.Errorf("spool: write body: %w", err)
	}
	var dirSynced chan error
	fileOpen := true
	defer func() {
		if dirSynced != nil {
			<-dirSynced
		}
		if fileOpen {
			f.Close()
		}
		if err != nil {
			// So that a client told "try again" does not also get the
			// message delivered. Best effort: if this fails too, the
			// message may be delivered twice, which beats losing it.
			s.fs.Remove(finalBody)
		}
	}()
	sum := newBodySum()
	bp := s.bufs.Get().(*[]byte)
	size, err := copyFull(io.MultiWriter(f, sum), ctxReader{ctx, body}, *bp)
	s.bufs.Put(bp)
	if err != nil {
		return fmt.Errorf("spool: write body: %w", err)
	}
	// While the header prefix is computed (a DKIM signature: CPU), body/,
	// where the file's entry exists since the create, is synced. (Starting
	// the body's write-back here too with sync_file_range(2) was measured:
	// no gain, so the one fsync after the trailer does it.)
	if !ready {
		dirSynced = make(chan error, 1)
		go func() { dirSynced <- s.bodySync.sync() }()
	}
	var prefix []byte
	if header != nil {
		if prefix, err = header(); err != nil {
			return fmt.Errorf("spool: header: %w", err)
		}
		// JSON would replace invalid UTF-8, and the body's place in the
		// file is its length less the Header's.
		if !utf8.Valid(prefix) {
			return errors.New("spool: header: not valid UTF-8")
		}
	}
	if env.Received.IsZero() {
		env.Received = now
	}
	env.Received = env.Received.UTC()
	env.To = slices.Clone(env.To)
	msg := &Message{ID: id, Envelope: env, Size: int64(len(prefix)) + size, Header: string(prefix),
		BodySum: sum.String(), NextAttempt: now, Created: now}
	for _, to := range env.To {
		msg.Rcpts = append(msg.Rcpts, Rcpt{Addr: to, State: Pending})
	}
	data, err := encodeMessage(msg)
	if err != nil {
		return err
	}
	if len(data) > maxTrailerJSON {
		return fmt.Errorf("spool: put: metadata of %d bytes is over the limit of %d", len(data), maxTrailerJSON)
	}
	// Last chance to give up: once the trailer is durable the message
	// exists.
	if err = ctx.Err(); err != nil {
		return fmt.Errorf("spool: put: %w", err)
	}
	// From here on the message is visible to readers (`queue delete`), so
	// the scheduler knows it first, as busy: a Delete meanwhile is carried
	// out when the Put ends instead of being undone by it.
	it := s.reserve(id)
	err = s.writeTrailer(f, data, size, readySize)
	if dirSynced != nil {
		dirErr := <-dirSynced
		dirSynced = nil
		if err == nil && dirErr != nil {
			err = fmt.Errorf("spool: sync body directory: %w", dirErr)
		}
	}
	if err == nil {
		// Close reports write-back errors on some file systems (NFS); not
		// checking it could acknowledge a message that is not on disk.
		fileOpen = false
		if cerr := f.Close(); cerr != nil {
			err = fmt.Errorf("spool: write body: close: %w", cerr)
		}
	}
	if err != nil {
		s.unreserve(it)
		return err
	}
	s.schedule(it, msg)
	return nil
}

// writeTrailer writes the metadata and its footer after the body's
// bodySize bytes and fsyncs the file. A crash before the fsync has finished can leave the
// trailer cut short (the file is then not a message; in a reused file,
// whose old end is marked reused until it is cut off, neither) or whole
// after a body that is not, which the body's sum tells when it is read.
func (s *Spool) writeTrailer(f File, metaJSON []byte, bodySize, oldSize int64) error {
	tp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(tp)
	n, err := f.Write(appendTrailer((*tp)[:0], metaJSON))
	if err != nil {
		return fmt.Errorf("spool: write metadata: %w", err)
	}
	end := bodySize + int64(n)
	// A delivered message's file, reused, may be longer than this one:
	// the rest goes, before the fsync that makes the new size durable
	// with the content.
	if oldSize > end {
		if err := f.Truncate(end); err != nil {
			return fmt.Errorf("spool: write body: truncate: %w", err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("spool: write body: fsync: %w", err)
	}
	return nil
}

// writeFile writes r to a new file name and fsyncs it; on error the file is
// removed.
func (s *Spool) writeFile(name string, r io.Reader) (n int64, err error) {
	f, err := s.fs.Create(name)
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			f.Close()
			s.fs.Remove(name)
		}
	}()
	bp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bp)
	if n, err = copyFull(f, r, *bp); err != nil {
		return n, err
	}
	if err = f.Sync(); err != nil {
		return n, fmt.Errorf("fsync: %w", err)
	}
	// Close reports write-back errors on some file systems (NFS); not
	// checking it could acknowledge a message that is not on disk.
	if err = f.Close(); err != nil {
		return n, fmt.Errorf("close: %w", err)
	}
	return n, nil
}

// copyFull copies r to w through buf, filling buf before each write: the
// header and the body arrive as separate reads, and a small message then
// still costs one write(2), not one per read. Only io.EOF ends the copy
// well; any other error of r (io.ErrUnexpectedEOF included: the client
// went away before the end of the data) is returned.
func copyFull(w io.Writer, r io.Reader, buf []byte) (n int64, err error) {
	for {
		k := 0
		var rerr error
		for k < len(buf) && rerr == nil {
			var m int
			m, rerr = r.Read(buf[k:])
			k += m
		}
		if rerr != nil && rerr != io.EOF {
			return n, rerr
		}
		if k > 0 {
			wk, werr := w.Write(buf[:k])
			n += int64(wk)
			if werr != nil {
				return n, werr
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
	}
}

// ctxReader stops a long body copy when the client has gone away.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// writeMeta atomically replaces the metadata in dir (queue/ or failed/).
func (s *Spool) writeMeta(m *Message, dir string, ds *dirSyncer) error {
	data, err := encodeMessage(m)
	if err != nil {
		return err
	}
	tmp := s.path(dirTmp, string(m.ID)+extMeta)
	// Files are created exclusively; a temp file left by an earlier
	// rewrite that failed half-way is ours to replace.
	if err := s.fs.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("spool: write metadata %s: %w", m.ID, err)
	}
	if _, err := s.writeFile(tmp, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("spool: write metadata %s: %w", m.ID, err)
	}
	if err := s.fs.Rename(tmp, s.path(dir, string(m.ID)+extMeta)); err != nil {
		s.fs.Remove(tmp)
		return fmt.Errorf("spool: commit metadata %s: %w", m.ID, err)
	}
	if err := ds.sync(); err != nil {
		return fmt.Errorf("spool: sync %s directory: %w", dir, err)
	}
	return nil
}

// Stats reports the active queue's length and its oldest message's arrival
// from memory (message ids carry their creation time), so monitoring never
// reads the disk. Messages of an earlier process count once Open's
// recovery has loaded them.
func (s *Spool) Stats() (n int, oldest time.Time) {
	s.mu.Lock()
	var first ID
	for id := range s.items {
		// IDs begin with a fixed-width UTC time, so they sort in time
		// order as strings: one parse, not one per message under the
		// lock that Put needs too.
		if first == "" || id < first {
			first = id
		}
	}
	n = len(s.items)
	s.mu.Unlock()
	if first == "" {
		return 0, time.Time{}
	}
	return n, first.Time()
}

// Get returns the metadata of a queued message.
func (s *Spool) Get(id ID) (*Message, error) { return s.readMeta(dirQueue, id, "get") }

// readMeta reads and decodes the metadata of id in dir (queue/ or failed/).
func (s *Spool) readMeta(dir string, id ID, op string) (*Message, error) {
	if _, err := ParseID(string(id)); err != nil {
		return nil, err
	}
	return metaResult(s.loadMeta(dir, id, decodeMessage), op)
}

// getQueued reads the metadata of a message in the scheduler, from its
// trailer alone while it has no metadata file.
func (s *Spool) getQueued(it *item) (*Message, error) {
	switch {
	case it.metaFile:
		return s.Get(it.id)
	case it.unread:
		return s.loadUnread(it)
	}
	return metaResult(s.loadTrailer(it.id, decodeMessage), "get")
}

func metaResult(r metaRead, op string) (*Message, error) {
	switch {
	case r.readFail && errors.Is(r.err, fs.ErrNotExist), r.incomplete:
		// A cut-short file is a Put still writing it, or one a crash cut
		// short (its first attempt after a restart removes it): not a
		// queued message.
		return nil, fmt.Errorf("spool: %s %s: %w", op, r.id, ErrNotFound)
	case r.err != nil:
		return nil, fmt.Errorf("spool: %s %s: %w", op, r.id, r.err)
	}
	return r.m, nil
}

// metaRead is the metadata of one message as loadMeta found it.
type metaRead struct {
	id         ID
	m          *Message // nil if it could not be read or decoded
	err        error    // why m is nil: the read error, or the decoding error
	readFail   bool     // err is the read's
	incomplete bool     // a first write cut short: metadata (incompleteMeta) or a body file without a whole trailer
	ready      bool     // incomplete, and a file made ready (empty, or marked by Reuse)
	// fromTrailer: queue/ has no metadata file, so it came from the end of
	// the body file (trailer.go).
	fromTrailer bool
}

// loadMeta reads and decodes dir/id's metadata. In queue/, a message that
// has no metadata file yet has it at the end of its body file.
func (s *Spool) loadMeta(dir string, id ID, decode decoder) metaRead {
	r := metaRead{id: id}
	data, err := s.fs.ReadFile(s.path(dir, string(id)+extMeta))
	if err != nil {
		if dir == dirQueue && errors.Is(err, fs.ErrNotExist) {
			return s.loadTrailer(id, decode)
		}
		r.err, r.readFail = err, true
		return r
	}
	r.m, r.err = decode(data, id)
	r.incomplete = r.err != nil && incompleteMeta(data)
	return r
}

// loadTrailer reads the metadata at the end of id's body file.
func (s *Spool) loadTrailer(id ID, decode decoder) metaRead {
	r := metaRead{id: id, fromTrailer: true}
	// A buffer per read was most of what `queue list` of a large queue
	// allocated; decoding copies what it keeps, so the buffer is reused.
	buf, _ := s.tailBufs.Get().(*[]byte)
	if buf == nil {
		b := make([]byte, trailerReadAhead)
		buf = &b
	}
	defer s.tailBufs.Put(buf)
	data, state, size, err := readTrailer(s.fs, s.path(dirBody, string(id)+extBody), *buf)
	switch {
	case err != nil:
		r.err, r.readFail = err, true
	case state == trailerAbsent || state == trailerReady:
		// A file made ready is empty, or a delivered message's kept for
		// a later one.
		r.err, r.incomplete, r.ready = fmt.Errorf("%w: body file without its metadata", ErrCorrupt), true, size == 0 || state == trailerReady
	case state == trailerDamaged:
		r.err = fmt.Errorf("%w: the metadata at the end of the body file does not match its checksum", ErrCorrupt)
	default:
		r.m, r.err = decode(data, id)
	}
	return r
}

// OpenBody opens a queued message for reading, as it will be delivered.
func (s *Spool) OpenBody(id ID) (io.ReadCloser, error) {
	m, err := s.Get(id)
	if err != nil {
		return nil, err
	}
	return s.openMessage(m, dirBody, true)
}

// openMessage opens m as it is delivered: its Header fields, then the
// body from its file in dir (body/ or failed/), checked against the
// metadata as it is read (verifiedBody). A reader that may race the
// message's delivery (racing) notes the file's size, so that a read
// that finds the file reused meanwhile says so, not that it is damaged.
func (s *Spool) openMessage(m *Message, dir string, racing bool) (*storedMessage, error) {
	id := m.ID
	f, err := s.fs.Open(s.path(dir, string(id)+extBody))
	if errors.Is(err, fs.ErrNotExist) {
		// A delivered message can leave between the two reads.
		return nil, fmt.Errorf("spool: open body %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("spool: open body %s: %w", id, err)
	}
	openSize := int64(-1)
	if of, ok := f.(openFile); ok && racing {
		fi, err := of.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("spool: open body %s: %w", id, err)
		}
		openSize = fi.Size()
	}
	body := newVerifiedBody(f, m, openSize)
	sm := &storedMessage{Reader: body, body: body}
	if m.Header != "" {
		sm.Reader = io.MultiReader(strings.NewReader(m.Header), body)
	}
	return sm, nil
}

// storedMessage is a queued message as it is delivered.
type storedMessage struct {
	io.Reader
	body *verifiedBody
}

func (m *storedMessage) Close() error { return m.body.Close() }

// List returns the active queue, sorted by ID (oldest first). It reads the
// disk, so it also works ReadOnly; entries that vanish or cannot be decoded
// meanwhile are skipped (Open and Run quarantine the latter). As with Walk,
// the messages come without their Header; Get has it.
func (s *Spool) List() ([]*Message, error) {
	var out []*Message
	err := s.Walk(func(m *Message) error {
		out = append(out, m)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// walkChunk is how many messages Walk decodes ahead of the one it hands
// out: enough to keep every core busy, few enough that a queue of any
// length is listed in constant memory.
const walkChunk = 512

// Walk calls fn with every queued message, in ID order (oldest first), as
// List would return them, without holding them all: `queue list` of a
// large queue streams instead of building a list first. An error from fn
// ends the walk and is returned. The messages come without their Header
// (the DKIM signature: most of the metadata, and no listing shows it);
// Get has it.
func (s *Spool) Walk(fn func(*Message) error) error {
	if err := s.waitRecovered(); err != nil {
		return err
	}
	// A message has a body file, and a metadata file in queue/ once its
	// metadata has changed; a metadata file whose body is gone is listed
	// too, as Open and Run find it (they quarantine it).
	//
	// body/ is listed first: a metadata file written meanwhile is then in
	// the second listing, and the newer metadata is what is shown.
	var ids []ID
	withMeta := make(map[ID]bool)
	for _, sub := range []struct{ dir, ext string }{{dirBody, extBody}, {dirQueue, extMeta}} {
		names, err := s.fs.ReadDirNames(s.path(sub.dir, ""))
		if err != nil {
			return fmt.Errorf("spool: list: %w", err)
		}
		for _, name := range names {
			// Anything else under an id's name (a directory) fails to
			// read below and is skipped.
			if id, ok := idFromName(name, sub.ext); ok {
				ids = append(ids, id)
				if sub.dir == dirQueue {
					withMeta[id] = true
				}
			}
		}
	}
	slices.SortFunc(ids, cmpID)
	ids = slices.Compact(ids)
	load := func(id ID) metaRead {
		if withMeta[id] {
			return s.loadMeta(dirQueue, id, decodeListing)
		}
		// No metadata file when queue/ was listed: its trailer is its
		// metadata, without asking queue/ for a file first.
		return s.loadTrailer(id, decodeListing)
	}
	return s.readMetas(ids, load, func(r metaRead) error {
		if r.m == nil {
			return nil
		}
		return fn(r.m)
	})
}

// readMetas reads and decodes the metadata of queued ids with load, calling fn
// with each in the order of ids; an error from fn ends it. Reading is a
// file open and a JSON decode each: a chunk of walkChunk is spread over the
// cores (more goroutines than cores, as a cold cache makes them wait for
// the disk) while fn gets the one before. That keeps a queue of 100,000
// within seconds for `queue list` and for the recovery at start, in
// constant memory.
func (s *Spool) readMetas(ids []ID, load func(ID) metaRead, fn func(metaRead) error) error {
	chunks := make(chan []metaRead, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		defer close(chunks)
		for start := 0; start < len(ids); start += walkChunk {
			part := make([]metaRead, min(walkChunk, len(ids)-start))
			var next atomic.Int64
			var wg sync.WaitGroup
			for range min(len(part), 4*runtime.GOMAXPROCS(0)) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := int(next.Add(1) - 1); i < len(part); i = int(next.Add(1) - 1) {
						part[i] = load(ids[start+i])
					}
				}()
			}
			wg.Wait()
			select {
			case chunks <- part:
			case <-stop:
				return
			}
		}
	}()
	for part := range chunks {
		for _, r := range part {
			if err := fn(r); err != nil {
				return err
			}
		}
	}
	return nil
}

func cmpID(a, b ID) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Delete removes a queued message. A message being delivered right now is
// removed when its attempt ends (which may still reach some recipients).
func (s *Spool) Delete(id ID) error {
	if _, err := ParseID(string(id)); err != nil {
		return err
	}
	if err := s.beginOp(); err != nil {
		return err
	}
	defer s.ops.Done()
	s.mu.Lock()
	it := s.items[id]
	if it == nil {
		// Not in the scheduler (yet): a body file without its whole
		// trailer is a Put still writing it, not a message, and is left
		// alone. A Put reserves its message in the scheduler before it
		// writes the trailer, so if the trailer is whole, asking the
		// scheduler again finds it, and the delete waits for the Put.
		s.mu.Unlock()
		if _, err := s.Get(id); errors.Is(err, ErrNotFound) {
			return fmt.Errorf("spool: delete %s: %w", id, ErrNotFound)
		}
		s.mu.Lock()
		it = s.items[id]
	}
	if it != nil && it.busy {
		it.deleted = true
		s.mu.Unlock()
		return nil
	}
	if it != nil {
		s.takeFresh(it)
		heap.Remove(&s.sched, it.index)
		delete(s.items, id)
	}
	s.mu.Unlock()
	if err := s.removeFiles(id, true, true); err != nil {
		return fmt.Errorf("spool: delete %s: %w", id, err)
	}
	s.event(Event{Kind: EventDeleted, ID: id})
	return nil
}

// removeFiles removes a message from the queue: its body file, then its
// metadata file if it has one. In that order, a crash in between leaves
// metadata without a body, which Open quarantines, not the first metadata
// at the end of the body file, which would send the message again to every
// recipient. An operator's delete is made durable before it is reported;
// the clean-up after delivery is not worth an fsync per message: a crash
// that undoes it makes the message be delivered again, which at-least-once
// allows. metaFile false says queue/<id>.json cannot exist (the scheduler
// knows), which spares an unlink that would fail.
func (s *Spool) removeFiles(id ID, durable, metaFile bool) error {
	err := s.fs.Remove(s.path(dirBody, string(id)+extBody))
	hadBody := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	hadMeta := false
	if metaFile {
		err = s.fs.Remove(s.path(dirQueue, string(id)+extMeta))
		hadMeta = err == nil
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if !hadMeta && !hadBody {
		return ErrNotFound
	}
	if durable {
		if err := s.bodySync.sync(); err != nil {
			return err
		}
		if hadMeta {
			if err := s.queueSync.sync(); err != nil {
				return err
			}
		}
	}
	return nil
}

// recover brings the directory to a consistent state after a crash and
// loads the queue.
func (s *Spool) recover(snap recoverySnapshot) (loaded int, err error) {
	// We hold the lock and these were listed before this process wrote
	// anything: every one is the leftover of a write that a crash
	// interrupted.
	for _, e := range snap.tmps {
		id, _ := ParseID(trimExt(e.Name()))
		err := s.fs.Remove(s.path(dirTmp, e.Name()))
		if err != nil {
			err = fmt.Errorf("spool: remove stale temp file %s: %w", e.Name(), err)
		}
		s.event(Event{Kind: EventRemovedTemp, ID: id, Err: err})
	}

	bodies, failedBodies := snap.bodies, snap.failedBodies
	ids := make([]ID, 0, len(snap.metas))
	for _, e := range snap.metas {
		name := e.Name()
		id, ok := idFromName(name, extMeta)
		if !ok || e.IsDir() {
			if err := s.quarantine(name, "", fmt.Errorf("%w: unexpected file name %q", ErrCorrupt, name)); err != nil {
				return loaded, err
			}
			continue
		}
		ids = append(ids, id)
	}
	snap.metas = nil
	load := func(id ID, next time.Time, metaFile bool) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, known := s.items[id]; known {
			return
		}
		if s.flushLoading && next.After(s.now()) {
			// `queue flush` arrived while the queue was loading.
			next = s.now()
		}
		s.items[id] = &item{id: id, next: next, metaFile: metaFile, unread: !metaFile}
		heap.Push(&s.sched, s.items[id])
		loaded++
	}
	loadQueued := func(id ID) metaRead { return s.loadMeta(dirQueue, id, decodeMessage) }
	err = s.readMetas(ids, loadQueued, func(r metaRead) error {
		id, m, err := r.id, r.m, r.err
		// The body goes with its metadata file, whatever becomes of it
		// here; what is left of body/ afterwards has no metadata file.
		bodyName := string(id) + extBody
		hasBody := bodies[bodyName]
		delete(bodies, bodyName)
		if r.fromTrailer {
			// Listed in queue/ and gone since (a Delete meanwhile, which
			// removes the body first): not ours to judge here.
			return nil
		}
		name := string(id) + extMeta
		if r.readFail {
			return fmt.Errorf("spool: read %s: %w", name, err)
		}
		if r.incomplete {
			// The first write of a Put by an earlier version (which wrote
			// the metadata as a file of its own) that a crash cut short,
			// never acknowledged; but a file damaged later looks the
			// same, so it is kept for the operator, not deleted.
			err = fmt.Errorf("%w: metadata cut short (a submission interrupted by a crash before it was acknowledged, or damage): %w", ErrCorrupt, err)
		}
		if err != nil {
			return s.quarantine(name, id, err)
		}
		if !hasBody {
			if failedBodies[bodyName] {
				// A move to failed/ was interrupted after the body went.
				if err := s.fs.Rename(s.path(dirQueue, name), s.path(dirFailed, name)); err != nil {
					return fmt.Errorf("spool: finish moving %s to failed: %w", id, err)
				}
				return nil
			}
			return s.quarantine(name, id, fmt.Errorf("%w: body missing", ErrCorrupt))
		}
		if len(m.Pending()) == 0 {
			// Decided before a crash interrupted the clean-up.
			if err := s.complete(m, true); err == nil {
				return nil
			}
			// Leave it queued; a worker retries the clean-up.
		}
		load(m.ID, m.NextAttempt, true)
		return nil
	})
	if err != nil {
		return loaded, err
	}

	// The rest of body/: messages whose metadata is still at the end of
	// their body file, and leftovers. Their trailers are not read here:
	// that would read the whole queue once more at every start, while
	// `queue list` and new mail want the disk and the cores, and each is
	// read at its first attempt anyway (loadUnread). A message whose
	// metadata was never changed is due since its Put, which its ID
	// dates; so they go oldest first.
	ids = ids[:0]
	for name := range bodies {
		if kept, ok := idFromName(name, extReuse); ok {
			s.removeLeftover(kept, name, true)
			continue
		}
		id, ok := idFromName(name, extBody)
		if !ok {
			// Not ours to delete; out of the way.
			if err := s.moveToCorrupt(dirBody, name); err != nil {
				return loaded, err
			}
			s.event(Event{Kind: EventCorrupt, Err: fmt.Errorf("%w: unexpected file %s/%s", ErrCorrupt, dirBody, name)})
			continue
		}
		ids = append(ids, id)
	}
	slices.SortFunc(ids, cmpID)
	// Files made ready for messages (readyfiles.go) that a crash left
	// unused are empty, and among the newest names: their IDs date their
	// making, never more than maxReadyAge before they are taken. The
	// newest few are looked at now, so that such files are not counted
	// as queued (the loaded count, the metrics, a `queue delete` that
	// would report one deleted) until their first attempt, which may be
	// an hour away while the upstream is paused. Reading the rest would
	// cost what loading by name saves; their first attempt checks them.
	recent := len(ids) - max(2*s.opts.ReadyFiles, minRecentChecked)
	for i, id := range ids {
		if i >= recent {
			if r := s.loadTrailer(id, decodeListing); r.incomplete {
				s.removeLeftover(id, string(id)+extBody, r.ready)
				continue
			}
		}
		load(id, id.Time(), false)
	}
	return loaded, nil
}

// minRecentChecked is how many of the newest never-attempted messages
// Open's recovery looks at, at least, for ready files left by a crash.
const minRecentChecked = 64

// loadUnread reads, at its first attempt, the trailer of a message that
// Open's recovery loaded without reading it. It was listed before this
// process wrote anything, so a body file without a whole trailer is a Put
// that a crash interrupted before it was acknowledged: it is removed, not
// delivered.
func (s *Spool) loadUnread(it *item) (*Message, error) {
	r := s.loadTrailer(it.id, decodeMessage)
	if !r.incomplete {
		if !r.readFail {
			// Looked at: from now on it is like any other message. After
			// a read error it is looked at again at the next attempt.
			it.unread = false
		}
		return metaResult(r, "get")
	}
	s.removeLeftover(it.id, string(it.id)+extBody, r.ready)
	return nil, fmt.Errorf("spool: get %s: %w", it.id, ErrNotFound)
}

// removeLeftover removes body/name, of an earlier process and without a
// whole trailer, so never acknowledged: a Put that a crash cut short, or
// (ready) a file made ready for a message.
func (s *Spool) removeLeftover(id ID, name string, ready bool) {
	err := s.fs.Remove(s.path(dirBody, name))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		err = nil
	case err != nil:
		err = fmt.Errorf("spool: remove body without metadata %s: %w", name, err)
	case ready:
		err = fmt.Errorf("%w %s (made ready for a message before a crash: empty, or a delivered message's kept for reuse; or a submission cut off before its first byte)", ErrEmptyLeftover, name)
	default:
		err = fmt.Errorf("spool: removed body without metadata %s", name)
	}
	s.event(Event{Kind: EventRemovedTemp, ID: id, Err: err})
}

func (s *Spool) nameSet(sub string) (map[string]bool, error) {
	entries, err := s.fs.ReadDir(s.path(sub, ""))
	if err != nil {
		return nil, fmt.Errorf("spool: read %s: %w", sub, err)
	}
	set := make(map[string]bool, len(entries))
	for _, e := range entries {
		if !e.IsDir() {
			set[e.Name()] = true
		}
	}
	return set, nil
}

func trimExt(name string) string { return name[:len(name)-len(filepath.Ext(name))] }

// quarantine moves queue/<name> (and the body of id, if any) to corrupt/,
// so that one bad file neither crashes the relay nor blocks the queue.
func (s *Spool) quarantine(name string, id ID, cause error) error {
	// A message whose metadata is still at the end of its body file has
	// no queue/ file.
	if err := s.moveToCorrupt(dirQueue, name); err != nil && (id == "" || !errors.Is(err, fs.ErrNotExist)) {
		return err
	}
	if id != "" {
		err := s.moveToCorrupt(dirBody, string(id)+extBody)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	s.event(Event{Kind: EventCorrupt, ID: id, Err: cause})
	return nil
}

func (s *Spool) moveToCorrupt(sub, name string) error {
	if err := s.fs.Rename(s.path(sub, name), s.path(dirCorrupt, name)); err != nil {
		return fmt.Errorf("spool: quarantine %s/%s: %w", sub, name, err)
	}
	if err := s.fs.SyncDir(s.path(dirCorrupt, "")); err != nil {
		return fmt.Errorf("spool: quarantine %s/%s: %w", sub, name, err)
	}
	return nil
}
