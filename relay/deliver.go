package relay

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"sealpost/spool"
	"sealpost/upstream"
)

// newUpstreamClient builds the smarthost client from the configuration. The
// secret is read once here so a missing or world-readable password file
// stops the start, and again for every connection so a rotated password is
// picked up without a restart.
func newUpstreamClient(cfg *Config) (*upstream.Client, error) {
	u := cfg.Upstream
	tlsConf, err := cfg.ClientTLS()
	if err != nil {
		return nil, fmt.Errorf("upstream TLS: %w", err)
	}
	var secret func(context.Context) (upstream.Secret, error)
	if u.Username != "" {
		src := upstream.SecretSource{File: u.PasswordFile, Env: u.PasswordEnv, Command: u.PasswordCommand, Credential: u.Credential}
		if err := src.Validate(); err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := src.Load(ctx); err != nil {
			return nil, fmt.Errorf("upstream secret: %w", err)
		}
		secret = src.Load
	}
	return upstream.NewClient(upstream.Config{
		Addr:           u.Addr,
		TLSMode:        u.TLS,
		TLS:            tlsConf,
		Hostname:       cfg.Hostname,
		Username:       u.Username,
		Auth:           upstream.Mechanism(u.Auth),
		Secret:         secret,
		DialTimeout:    time.Duration(u.DialTimeout),
		CommandTimeout: time.Duration(u.CommandTimeout),
	})
}

// upstreamDeliverer lets the spool's delivery loop send through the
// upstream client without the spool knowing SMTP.
type upstreamDeliverer struct {
	client upstreamSender
	audit  *auditLog
	addr   string
	// hardStop ends deliveries in flight. The spool's own context only
	// stops new attempts at shutdown: a transfer cut off after the upstream
	// took the message but before its reply arrived would be sent again.
	hardStop context.Context
}

func (d *upstreamDeliverer) Deliver(ctx context.Context, id spool.ID, env spool.Envelope, to []string, body io.Reader) ([]error, error) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	defer context.AfterFunc(d.hardStop, cancel)()
	perRcpt, info, err := d.client.Deliver(ctx, upstream.Message{From: env.From, To: to, SMTPUTF8: env.SMTPUTF8}, body)
	d.audit.metrics.upstreamAttempt(err, info, env.Received)
	if err == nil {
		var accepted []string
		for i, rcptErr := range perRcpt {
			if rcptErr == nil {
				accepted = append(accepted, to[i])
			}
		}
		if len(accepted) > 0 {
			d.audit.record("delivered",
				slog.String("queue_id", string(id)),
				slog.String("mail_from", env.From),
				slog.Any("rcpt", accepted),
				slog.String("upstream", d.addr),
				slog.String("upstream_reply", info.Reply),
				slog.String("tls", info.TLSVersion),
				slog.Int64("duration_ms", info.Duration.Milliseconds()),
				envelopeAttrs(env))
		}
	}
	return perRcpt, err
}

// spoolEvent turns the spool's decisions into audit records. Deliveries are
// recorded by upstreamDeliverer, which knows the upstream's reply and TLS
// version; the rest only the spool knows.
func (r *Relay) spoolEvent(e spool.Event) {
	attrs := []slog.Attr{
		slog.String("queue_id", string(e.ID)),
		slog.String("mail_from", e.Envelope.From),
		slog.Any("rcpt", e.Rcpts),
		slog.Int("attempts", e.Attempts),
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("error", e.Err.Error()))
	}
	attrs = append(attrs, spoolEventAttrs(r.cfg.Upstream.Addr, e)...)
	switch e.Kind {
	case spool.EventDelivered:
		return
	case spool.EventDeferred:
		attrs = append(attrs, slog.Time("next_attempt", e.NextAttempt))
	case spool.EventRemovedTemp, spool.EventCorrupt, spool.EventError:
		r.log.LogAttrs(context.Background(), slog.LevelWarn, "spool: "+e.Kind, attrs...)
		return
	}
	r.audit.record(e.Kind, attrs...)
	if e.Kind == spool.EventFailed || e.Kind == spool.EventExpired {
		r.bounce(e)
	}
}
