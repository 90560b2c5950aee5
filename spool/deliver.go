package spool

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"time"
)

// Deliverer hands a message to the upstream. The upstream package
// implements it; spool does not know it.
type Deliverer interface {
	// Deliver sends body to the recipients in to (only those still
	// pending). It returns one error per recipient, in the order of to (nil
	// = accepted by the upstream), when the transaction got that far, or a
	// non-nil err for the whole attempt (connection, TLS, AUTH, MAIL or
	// DATA refused). Errors are temporary unless they implement
	// Temporary() bool returning false: unknown errors are temporary, mail
	// is never dropped on a guess. An err implementing RetryAt() time.Time
	// says the deliverer did not try at all (its upstream is in a backoff
	// pause): the attempt is not counted and every delivery waits until then.
	// If err also has PauseKey() string returning non-empty, only the
	// messages whose attempts returned that key wait (several upstreams:
	// a paused one must not hold back mail for another).
	// id names the message, for the deliverer's own records.
	Deliver(ctx context.Context, id ID, env Envelope, to []string, body io.Reader) (perRcpt []error, err error)
}

// Event kinds.
const (
	EventDelivered   = "delivered"    // Rcpts were accepted by the upstream
	EventDeferred    = "deferred"     // Rcpts stay pending until NextAttempt; Err says why
	EventFailed      = "failed"       // Rcpts were refused for good; Err says why
	EventExpired     = "expired"      // Rcpts were given up after MaxAge; Err is the last error
	EventRemovedTemp = "removed-temp" // a leftover of an interrupted write was removed (at Open, or a Put cut short at its first attempt after it)
	EventCorrupt     = "corrupt"      // a file was quarantined in corrupt/
	EventDeleted     = "deleted"      // removed by Delete
	EventError       = "error"        // the spool could not record a result (disk trouble); Err says what
	EventLoaded      = "loaded"       // Open's recovery has loaded the queue of earlier processes: Queued messages in Duration (those whose metadata never changed by their file names, but for the newest few, looked at for leftovers of a crash; a Put cut short among the others is removed at its first attempt); Err if it stopped short
)

// Event is one record for the audit log. A single delivery attempt may
// produce several (some recipients delivered, others deferred); a message
// is finished when no recipient is left pending: its files are removed if
// every recipient was delivered, moved to failed/ otherwise.
type Event struct {
	Kind        string
	ID          ID
	Envelope    Envelope
	Rcpts       []string
	Attempts    int
	NextAttempt time.Time
	Err         error
	Duration    time.Duration // of the delivery attempt; of the loading for EventLoaded
	Queued      int           // EventLoaded: how many messages were loaded
	// Done marks the last event of a message that has left the active
	// queue (delivered to all, failed, expired), so a listener can forget
	// what it kept about it.
	Done bool
}

// item is the scheduler's view of a queued message; the metadata itself
// stays on disk and is read per attempt, so memory does not grow with
// message or envelope size. The exception is fresh: the metadata of a
// message this process just committed, kept for its first attempt (most
// mail is delivered then, and reading back what was just written costs an
// open, a read and a JSON decode per message); at most maxFresh items hold
// one at a time.
type item struct {
	id      ID
	next    time.Time
	fresh   *Message
	index   int  // in the heap; -1 when not in it
	busy    bool // with a worker
	deleted bool // Delete was called while busy
	flushed bool // Flush was called while busy
	// pauseKey is the PauseKey of the last attempt's RetryAt error ("" for
	// none): while that key is paused the scheduler moves the message back
	// without handing it to a worker.
	pauseKey string
	// metaFile: queue/<id>.json may exist. Until then the metadata is
	// only in the trailer, which is read without asking for the file.
	metaFile bool
	// unread: loaded by Open's recovery from the name of its body file
	// alone; the trailer is checked at the first attempt (loadUnread).
	unread bool
}

type schedHeap []*item

func (h schedHeap) Len() int { return len(h) }
func (h schedHeap) Less(i, j int) bool {
	if !h[i].next.Equal(h[j].next) {
		return h[i].next.Before(h[j].next)
	}
	return h[i].id < h[j].id
}
func (h schedHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *schedHeap) Push(x any) {
	it := x.(*item)
	it.index = len(*h)
	*h = append(*h, it)
}
func (h *schedHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	it.index = -1
	*h = old[:len(old)-1]
	return it
}

// maxFresh bounds how many just-committed messages keep their metadata
// in memory until their first attempt: while the upstream is down they
// pile up, and the queue's memory must not grow with its length.
const maxFresh = 1024

// reserve registers a message that Put is about to commit, as busy: a
// Delete in the meantime only marks it.
func (s *Spool) reserve(id ID) *item {
	it := &item{id: id, busy: true, index: -1}
	s.mu.Lock()
	s.items[id] = it
	s.mu.Unlock()
	return it
}

// unreserve forgets a message whose Put failed (its files are removed).
func (s *Spool) unreserve(it *item) {
	s.mu.Lock()
	if s.items[it.id] == it {
		delete(s.items, it.id)
	}
	s.mu.Unlock()
}

// schedule hands a freshly committed message m, reserved as it, to the
// scheduler, or carries out a Delete that arrived while it was written.
func (s *Spool) schedule(it *item, m *Message) {
	s.mu.Lock()
	if s.fresh < maxFresh && !it.deleted {
		it.fresh = m
		s.fresh++
	}
	s.mu.Unlock()
	s.release(it, m.NextAttempt)
}

// takeFresh returns the metadata kept for it's first attempt, if any.
// Called with s.mu held.
func (s *Spool) takeFresh(it *item) *Message {
	m := it.fresh
	if m != nil {
		it.fresh = nil
		s.fresh--
	}
	return m
}

// Kick makes Run look for due messages now instead of when its timer fires.
func (s *Spool) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Flush makes every queued message due now (`queue flush`) and kicks Run.
// A message being delivered is retried as soon as that attempt ends, should
// it fail; while Open's recovery is still loading the queue, what it loads
// afterwards is due at once too.
func (s *Spool) Flush() {
	now := s.now()
	loading := s.Loading()
	s.mu.Lock()
	if loading {
		s.flushLoading = true
	}
	s.pausedUntil = time.Time{}
	clear(s.keyPaused)
	for _, it := range s.items {
		if it.busy {
			it.flushed = true
		}
	}
	for _, it := range s.sched {
		if it.next.After(now) {
			it.next = now
		}
	}
	heap.Init(&s.sched)
	s.mu.Unlock()
	s.Kick()
}

// Run delivers queued messages with d until ctx is done or the spool is
// closed, then waits for the attempts in progress and returns nil. Only one
// Run may be active at a time.
func (s *Spool) Run(ctx context.Context, d Deliverer) error {
	if d == nil {
		return errors.New("spool: run: nil Deliverer")
	}
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return ErrClosed
	case s.opts.ReadOnly:
		s.mu.Unlock()
		return ErrReadOnly
	case s.running:
		s.mu.Unlock()
		return errors.New("spool: run: already running")
	}
	s.running = true
	s.ops.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running = false
		s.mu.Unlock()
		s.ops.Done()
	}()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()

	// The queue of earlier processes is scheduled once Open's recovery
	// has loaded it.
	if s.recovered != nil {
		select {
		case <-s.recovered:
		case <-ctx.Done():
			return nil
		}
	}
	if err := s.waitRecovered(); err != nil {
		return err
	}

	// Unbuffered: a message leaves the heap only when a worker is free to
	// take it, so the heap stays the single place that decides order.
	jobs := make(chan *item)
	finished := make(chan struct{})
	for range s.opts.Workers {
		go func() {
			defer func() { finished <- struct{}{} }()
			for it := range jobs {
				// The scheduler may have handed this message out just
				// before another attempt paused the upstream.
				if s.isPaused() || s.keyPausedFor(it) {
					s.release(it, it.next)
					continue
				}
				s.attempt(ctx, d, it)
			}
		}()
	}
	defer func() {
		close(jobs)
		for range s.opts.Workers {
			<-finished
		}
	}()

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		it, wait, ok := s.nextDue()
		if it != nil {
			select {
			case jobs <- it:
				continue
			case <-ctx.Done():
				s.release(it, it.next)
				return nil
			}
		}
		if ok {
			timer.Reset(wait)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// nextDue pops the first due message and marks it busy, or returns how long
// until the first one is due (ok false: nothing queued).
func (s *Spool) nextDue() (it *item, wait time.Duration, ok bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sched) == 0 {
		return nil, 0, false
	}
	if s.pausedUntil.After(now) {
		return nil, s.pausedUntil.Sub(now), true
	}
	top := s.sched[0]
	// Messages of a paused key are moved to the end of its pause, in
	// memory; each moves at most once per pause, so the loop is bounded by
	// the queue's length.
	for top.pauseKey != "" && s.keyPaused[top.pauseKey].After(now) && !top.next.After(now) {
		top.next = s.keyPaused[top.pauseKey]
		heap.Fix(&s.sched, 0)
		top = s.sched[0]
	}
	if top.next.After(now) {
		return nil, top.next.Sub(now), true
	}
	heap.Pop(&s.sched)
	top.busy = true
	return top, 0, true
}

// release puts a busy item back in the heap, or carries out a Delete that
// arrived while it was busy.
func (s *Spool) release(it *item, next time.Time) {
	s.mu.Lock()
	it.busy = false
	if it.deleted {
		s.takeFresh(it)
		delete(s.items, it.id)
		s.mu.Unlock()
		err := s.removeFiles(it.id, true, true)
		if errors.Is(err, ErrNotFound) {
			err = nil
		}
		s.event(Event{Kind: EventDeleted, ID: it.id, Err: err})
		return
	}
	if it.flushed {
		it.flushed = false
		if now := s.now(); next.After(now) {
			next = now
		}
	}
	it.next = next
	heap.Push(&s.sched, it)
	s.mu.Unlock()
	s.Kick() // the new head may be due earlier than the scheduler's timer
}

// forget drops a message that has left the queue.
func (s *Spool) forget(it *item) {
	s.mu.Lock()
	delete(s.items, it.id)
	s.mu.Unlock()
}

// attempt makes one delivery attempt of a busy item and records the result.
func (s *Spool) attempt(ctx context.Context, d Deliverer, it *item) {
	s.mu.Lock()
	m := s.takeFresh(it)
	s.mu.Unlock()
	var err error
	if m == nil {
		m, err = s.getQueued(it)
	}
	switch {
	case errors.Is(err, ErrNotFound):
		s.forget(it)
		return
	case errors.Is(err, ErrCorrupt):
		s.quarantineItem(it, err)
		return
	case err != nil:
		s.event(Event{Kind: EventError, ID: it.id, Err: err})
		s.release(it, s.now().Add(s.backoff(1)))
		return
	}

	pending := m.Pending()
	if len(pending) == 0 {
		// Finished before a crash interrupted the clean-up.
		s.finish(it, m)
		return
	}

	start := s.now()
	perRcpt, aerr := s.deliver(ctx, d, m, pending)
	now := s.now()
	if errors.Is(aerr, ErrCorrupt) {
		s.quarantineItem(it, aerr)
		return
	}
	var paused interface{ RetryAt() time.Time }
	if aerr != nil && errors.As(aerr, &paused) {
		// The deliverer did not even try (its upstream is in a backoff
		// pause): not an attempt, so neither counted nor recorded, and
		// no other message is handed out before then either.
		until := paused.RetryAt()
		var keyed interface{ PauseKey() string }
		if errors.As(aerr, &keyed) && keyed.PauseKey() != "" {
			s.pauseKeyed(it, keyed.PauseKey(), until)
		} else {
			s.pause(it, until)
		}
		s.release(it, until)
		return
	}
	it.pauseKey = ""
	base := Event{ID: m.ID, Envelope: m.Envelope, Duration: now.Sub(start)}
	if aerr == nil && len(perRcpt) != len(pending) {
		aerr = fmt.Errorf("spool: deliverer returned %d results for %d recipients", len(perRcpt), len(pending))
	}
	// An attempt cut short by shutdown says nothing about the upstream: it
	// neither counts nor delays the message.
	interrupted := aerr != nil && !IsPermanent(aerr) && ctx.Err() != nil

	var delivered, failed, deferred []string
	var failErrs, deferErrs []error
	pi := 0
	for i := range m.Rcpts {
		r := &m.Rcpts[i]
		if r.State != Pending {
			continue
		}
		rerr := aerr
		switch {
		case aerr == nil:
			rerr = perRcpt[pi]
		case len(perRcpt) == len(pending) && perRcpt[pi] != nil:
			// The attempt failed as a whole, but this recipient had its
			// own answer first (every RCPT refused: a 550 among them is
			// final even though the transaction ended with a 4xx-like
			// "nothing accepted").
			rerr = perRcpt[pi]
		}
		pi++
		switch {
		case rerr == nil:
			r.State, r.LastReply = Delivered, ""
			delivered = append(delivered, r.Addr)
		case IsPermanent(rerr):
			r.State, r.LastReply = Failed, rerr.Error()
			failed = append(failed, r.Addr)
			failErrs = append(failErrs, fmt.Errorf("%s: %w", r.Addr, rerr))
		default:
			r.LastReply = rerr.Error()
			deferred = append(deferred, r.Addr)
			deferErrs = append(deferErrs, fmt.Errorf("%s: %w", r.Addr, rerr))
		}
	}
	if !interrupted {
		m.Attempts++
	}
	switch {
	case aerr != nil:
		m.LastError = aerr.Error()
	case len(deferErrs) > 0:
		m.LastError = errors.Join(deferErrs...).Error()
	case len(failErrs) > 0:
		m.LastError = errors.Join(failErrs...).Error()
	}

	var expired []string
	deadline := m.Created.Add(s.opts.MaxAge)
	if len(deferred) > 0 && !interrupted && !now.Before(deadline) {
		for i := range m.Rcpts {
			if r := &m.Rcpts[i]; r.State == Pending {
				r.State = Failed
				r.LastReply = fmt.Sprintf("expired after %v: %s", s.opts.MaxAge, r.LastReply)
			}
		}
		expired, deferred = deferred, nil
	}

	events := make([]Event, 0, 3)
	add := func(kind string, rcpts []string, err error) {
		if len(rcpts) == 0 {
			return
		}
		e := base
		e.Kind, e.Rcpts, e.Attempts, e.Err = kind, rcpts, m.Attempts, err
		events = append(events, e)
	}
	add(EventDelivered, delivered, nil)
	add(EventFailed, failed, errors.Join(failErrs...))
	add(EventExpired, expired, errors.Join(deferErrs...))

	if len(deferred) == 0 {
		// Events after the files: the audit log reports what is on disk.
		s.finish(it, m)
		if len(events) > 0 {
			events[len(events)-1].Done = true
		}
		s.emit(events)
		return
	}
	if interrupted {
		m.NextAttempt = now
	} else {
		// Never beyond the deadline: the last try happens at expiry, so
		// mail is not given up without one.
		m.NextAttempt = now.Add(s.backoff(m.Attempts))
		if m.NextAttempt.After(deadline) {
			m.NextAttempt = deadline
		}
	}
	add(EventDeferred, deferred, errors.Join(deferErrs...))
	events[len(events)-1].NextAttempt = m.NextAttempt
	// Before the write: once it may have happened, the file counts.
	it.metaFile = true
	if err := s.writeMeta(m, dirQueue, s.queueSync); err != nil {
		// The old metadata stays: recipients delivered now may get the
		// message again (at least once), none is lost.
		events = append(events, Event{Kind: EventError, ID: m.ID, Envelope: m.Envelope, Err: err})
	}
	s.emit(events)
	// After the events: a Delete that arrived meanwhile is carried out
	// here, and its event must come last.
	s.release(it, m.NextAttempt)
}

func (s *Spool) emit(events []Event) {
	for _, e := range events {
		s.event(e)
	}
}

// deliver calls d with the body open, turning a panic into a temporary
// error: a buggy deliverer must not take the queue down with it.
func (s *Spool) deliver(ctx context.Context, d Deliverer, m *Message, to []string) (perRcpt []error, err error) {
	body, err := s.openMessage(m, dirBody, false)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	defer func() {
		if r := recover(); r != nil {
			perRcpt, err = nil, fmt.Errorf("spool: deliverer panicked: %v", r)
		}
	}()
	env := m.Envelope
	env.Size = m.Size
	perRcpt, err = d.Deliver(ctx, m.ID, env, to, body)
	if cerr := body.body.corrupt(); cerr != nil {
		// Whatever the deliverer made of the read error, the body on disk
		// is not the one that was accepted.
		return nil, cerr
	}
	return perRcpt, err
}

// quarantineItem takes a busy message whose metadata or body is damaged
// out of the scheduler and its files out of the way (corrupt/).
func (s *Spool) quarantineItem(it *item, cause error) {
	s.forget(it)
	if err := s.quarantine(string(it.id)+extMeta, it.id, cause); err != nil {
		s.event(Event{Kind: EventError, ID: it.id, Err: err})
	}
}

// finish takes a message with no pending recipient out of the queue.
func (s *Spool) finish(it *item, m *Message) {
	if err := s.complete(m, it.metaFile); err != nil {
		// A move to failed/ that stopped half-way may have written the
		// metadata file: from now on it counts.
		it.metaFile = true
		s.event(Event{Kind: EventError, ID: m.ID, Envelope: m.Envelope, Err: err})
		// Try again later; the files are still where Open expects them.
		s.release(it, s.now().Add(s.backoff(1)))
		return
	}
	s.forget(it)
}

// complete removes the files of a message with no pending recipient (all
// delivered) or moves them to failed/. Its final state is already durable
// in queue/ (or, for all delivered, no longer matters), so a crash during
// the moves is completed by Open. metaFile says whether queue/<id>.json
// may exist.
func (s *Spool) complete(m *Message, metaFile bool) error {
	for _, r := range m.Rcpts {
		if r.State != Delivered {
			return s.moveToFailed(m)
		}
	}
	// A message whose metadata never left its file: the file is kept for
	// a later message, if the pool of ready files wants it.
	if !metaFile && s.ready != nil && s.ready.reuse(m.ID) {
		return nil
	}
	if err := s.removeFiles(m.ID, false, metaFile); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return nil
}

func (s *Spool) moveToFailed(m *Message) error {
	// 1. the final recipient states, durably, where Open looks first
	if err := s.writeMeta(m, dirQueue, s.queueSync); err != nil {
		return err
	}
	// 2. the body, then 3. the metadata: Open recognises a queue entry whose
	// body is already in failed/ and completes the move.
	name := string(m.ID)
	err := s.fs.Rename(s.path(dirBody, name+extBody), s.path(dirFailed, name+extBody))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("spool: move body %s to failed: %w", m.ID, err)
	}
	if err := s.fs.Rename(s.path(dirQueue, name+extMeta), s.path(dirFailed, name+extMeta)); err != nil {
		return fmt.Errorf("spool: move metadata %s to failed: %w", m.ID, err)
	}
	if err := s.failedSync.sync(); err != nil {
		return fmt.Errorf("spool: sync failed directory: %w", err)
	}
	return nil
}

// isPaused reports whether deliveries are held back right now.
func (s *Spool) isPaused() bool {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pausedUntil.After(now)
}

// pause holds back every delivery until t; the deliverer asked for it in
// the attempt of it. A Flush during that attempt (it.flushed) ended the
// pause the answer may predate: it is not imposed again, and it is
// retried at once (release), which asks the deliverer afresh.
func (s *Spool) pause(it *item, t time.Time) {
	s.mu.Lock()
	if !it.flushed && t.After(s.pausedUntil) {
		s.pausedUntil = t
	}
	s.mu.Unlock()
}

// pauseKeyed holds back, until t, it and every message whose attempt
// returns the same key. Other messages are delivered meanwhile.
func (s *Spool) pauseKeyed(it *item, key string, t time.Time) {
	s.mu.Lock()
	it.pauseKey = key
	if it.flushed {
		// As in pause: the answer may predate the Flush.
		s.mu.Unlock()
		return
	}
	if s.keyPaused == nil {
		s.keyPaused = map[string]time.Time{}
	}
	if t.After(s.keyPaused[key]) {
		s.keyPaused[key] = t
	}
	// Forget pauses that are over, so the map holds only live keys.
	now := s.now()
	for k, until := range s.keyPaused {
		if !until.After(now) {
			delete(s.keyPaused, k)
		}
	}
	s.mu.Unlock()
}

// keyPausedFor reports whether it belongs to a key paused right now.
func (s *Spool) keyPausedFor(it *item) bool {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	return it.pauseKey != "" && s.keyPaused[it.pauseKey].After(now)
}

// backoff returns the wait after the n-th failed attempt (n >= 1).
func (s *Spool) backoff(n int) time.Duration {
	b := s.opts.Backoff
	d := b[min(max(n, 1), len(b))-1]
	// ±10% jitter, so that messages queued together (an upstream outage, a
	// restart loading the whole queue) do not all retry at the same instant
	// and hit the upstream's rate limit as one burst.
	j := int64(d) / 10
	if j > 0 {
		d += time.Duration(rand.Int64N(2*j+1) - j)
	}
	return d
}

// IsPermanent reports whether err says it is permanent (implements
// Temporary() bool returning false). Anything else is temporary.
func IsPermanent(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && !t.Temporary()
}
