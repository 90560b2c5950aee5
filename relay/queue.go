package relay

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// failedCleanInterval is how often failed/ is pruned; keep_failed is days,
// so an hour's slack does not matter and costs nothing.
const failedCleanInterval = time.Hour

// startQueueHelpers serves the control socket and prunes failed/ until the
// returned stop is called.
func (r *Relay) startQueueHelpers() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	if r.control != nil {
		wg.Go(func() { r.serveControl(r.control) })
	}
	wg.Go(func() {
		t := time.NewTicker(failedCleanInterval)
		defer t.Stop()
		for {
			r.cleanFailed()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			if r.control != nil {
				r.control.Close()
			}
			wg.Wait()
		})
	}
}

func (r *Relay) cleanFailed() {
	n, err := r.spool.CleanFailed(time.Duration(r.cfg.Spool.KeepFailed))
	if err != nil {
		r.log.Warn("spool: pruning failed/", slog.Any("err", err))
	}
	if n > 0 {
		r.log.Info("spool: removed failed messages older than spool.keep_failed", slog.Int("count", n), slog.Duration("keep_failed", time.Duration(r.cfg.Spool.KeepFailed)))
	}
}
