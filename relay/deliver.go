package relay

import (
	"context"
	"errors"
	"log/slog"

	"sealpost/spool"
)

// spoolEvent turns the spool's decisions into audit records. Deliveries are
// recorded by the routing deliverer (route.go), which knows the upstream's
// reply and TLS version; the rest only the spool knows.
func (r *Relay) spoolEvent(e spool.Event) {
	if e.Kind == spool.EventLoaded {
		// After a restart, how long until the whole queue is scheduled
		// (and counted by the control socket's replies).
		level, attrs := slog.LevelInfo, []slog.Attr{slog.Int("queued", e.Queued), slog.Int64("duration_ms", e.Duration.Milliseconds())}
		if e.Err != nil {
			level, attrs = slog.LevelError, append(attrs, slog.String("error", e.Err.Error()))
		}
		r.log.LogAttrs(context.Background(), level, "spool: queue loaded", attrs...)
		return
	}
	// A deferral is the last record of its attempt; the next attempt
	// records its own upstream.
	if r.routes != nil && (e.Done || e.Kind == spool.EventDeleted || e.Kind == spool.EventDeferred) {
		defer r.routes.forget(e.ID)
	}
	if e.Kind == spool.EventDelivered {
		return
	}
	attrs := []slog.Attr{
		slog.String("queue_id", string(e.ID)),
		slog.String("mail_from", e.Envelope.From),
		slog.Any("rcpt", e.Rcpts),
		slog.Int("attempts", e.Attempts),
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("error", e.Err.Error()))
	}
	attrs = append(attrs, r.upstreamEventAttrs(e)...)
	switch e.Kind {
	case spool.EventDeferred:
		attrs = append(attrs, slog.Time("next_attempt", e.NextAttempt))
	case spool.EventRemovedTemp:
		level := slog.LevelWarn
		if errors.Is(e.Err, spool.ErrEmptyLeftover) {
			// Expected after any crash (the files made ready for the
			// next messages), and nothing of a message was in it.
			level = slog.LevelInfo
		}
		r.log.LogAttrs(context.Background(), level, "spool: "+e.Kind, attrs...)
		return
	case spool.EventCorrupt, spool.EventError:
		r.log.LogAttrs(context.Background(), slog.LevelWarn, "spool: "+e.Kind, attrs...)
		return
	}
	r.audit.record(e.Kind, attrs...)
	if e.Kind == spool.EventFailed || e.Kind == spool.EventExpired {
		r.bounce(e)
	}
}
