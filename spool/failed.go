package spool

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"time"
)

// GetFailed returns the metadata of a message kept in failed/.
func (s *Spool) GetFailed(id ID) (*Message, error) {
	return s.readMeta(dirFailed, id, "get failed")
}

// Lookup finds a message in the active queue or, failing that, in failed/
// (inFailed true), with a reader of the message as it was (to be) delivered.
func (s *Spool) Lookup(id ID) (m *Message, body io.ReadCloser, inFailed bool, err error) {
	m, err = s.Get(id)
	if errors.Is(err, ErrNotFound) {
		if m, err = s.GetFailed(id); err != nil {
			return nil, nil, false, err
		}
		inFailed = true
	}
	if err != nil {
		return nil, nil, false, err
	}
	dir := dirBody
	if inFailed {
		dir = dirFailed
	}
	// A queued message can be delivered and its file reused for a later
	// message while it is read: racing, so that the read says so rather
	// than that it is damaged.
	sm, err := s.openMessage(m, dir, !inFailed)
	if err != nil {
		return nil, nil, false, err
	}
	return m, sm, inFailed, nil
}

// ListFailed returns the messages kept in failed/, oldest first.
func (s *Spool) ListFailed() ([]*Message, error) {
	entries, err := s.fs.ReadDir(s.path(dirFailed, ""))
	if err != nil {
		return nil, fmt.Errorf("spool: list failed: %w", err)
	}
	var out []*Message
	for _, e := range entries {
		id, ok := idFromName(e.Name(), extMeta)
		if !ok || e.IsDir() {
			continue
		}
		if m, err := s.GetFailed(id); err == nil {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b *Message) int { return cmpID(a.ID, b.ID) })
	return out, nil
}

// CleanFailed removes the messages that were moved to failed/ more than
// keep ago (by the time of their last metadata write, which is when they
// were given up) and returns how many it removed.
func (s *Spool) CleanFailed(keep time.Duration) (int, error) {
	if err := s.beginOp(); err != nil {
		return 0, err
	}
	defer s.ops.Done()
	entries, err := s.fs.ReadDir(s.path(dirFailed, ""))
	if err != nil {
		return 0, fmt.Errorf("spool: clean failed: %w", err)
	}
	cutoff := s.now().Add(-keep)
	n := 0
	var errs []error
	for _, e := range entries {
		id, ok := idFromName(e.Name(), extMeta)
		if !ok || e.IsDir() {
			continue
		}
		info, err := e.Info()
		if err != nil || info.ModTime().After(cutoff) {
			continue
		}
		// Metadata first: a body left alone by a crash is only litter,
		// never a message that seems to exist without its body.
		if err := s.fs.Remove(s.path(dirFailed, e.Name())); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := s.fs.Remove(s.path(dirFailed, string(id)+extBody)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
		n++
	}
	if n > 0 {
		if err := s.failedSync.sync(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return n, fmt.Errorf("spool: clean failed: %w", errors.Join(errs...))
	}
	return n, nil
}
