//go:build unix && !solaris && !aix

package spool

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// lockDir takes an exclusive, non-blocking flock on dir/lock. flock locks
// belong to the open file, so the lock goes away with the process however
// it dies: no stale lock files after a crash.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: open lock file: %w", err)
	}
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	// A lock can outlive its holder by a moment: a process still exiting
	// (a quick restart), or a child forked (to run password_command) that
	// has not reached exec yet and so still shares the descriptor. Give
	// those a short, bounded grace before declaring the spool taken.
	for wait := 10 * time.Millisecond; errors.Is(err, syscall.EWOULDBLOCK) && wait <= 640*time.Millisecond; wait *= 2 {
		time.Sleep(wait)
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	}
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("spool: %s is locked by another process (is sealpost already running?): %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("spool: lock %s: %w", path, err)
	}
	return f, nil
}
