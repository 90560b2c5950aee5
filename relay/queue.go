package relay

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"

	"sealpost/upstream"
)

// upstreamSender is what the deliverer needs of the upstream: a
// *upstream.Pool in the daemon, a bare *upstream.Client where one
// connection per message is wanted.
type upstreamSender interface {
	Deliver(ctx context.Context, msg upstream.Message, body io.Reader) ([]error, upstream.DeliveryInfo, error)
}

// newUpstreamPool puts the connection limits and the per-upstream backoff
// in front of c. The backoff follows spool.retry_intervals: a dead upstream
// gets one connection attempt per interval while every queued message waits
// without its attempts being counted.
func newUpstreamPool(cfg *Config, c *upstream.Client) *upstream.Pool {
	return upstream.NewPool(c, upstream.PoolConfig{
		MaxConnections:           cfg.Upstream.MaxConnections,
		MaxMessagesPerConnection: cfg.Upstream.MaxMessagesPerConnection,
		Backoff:                  durations(cfg.Spool.RetryIntervals),
	})
}

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
