package relay

import (
	"errors"
	"fmt"
	"log/slog"

	"sealpost/spool"
	"sealpost/upstream"
)

// The audit schema: field names every record uses where they apply. They
// are documented in README ("Logs and audit records") and are a contract:
// admins grep, alert and build dashboards on them. Add fields freely;
// never rename these.
var auditFields = []string{
	"event", "queue_id", "client_ip", "local_user", "auth_user", "mail_from", "rcpt", "size",
	"message_id", "dkim", "upstream", "upstream_reply", "tls", "rule", "duration_ms",
}

// envelopeAttrs are the fields a queued message carries from its
// submission into every later record: who submitted it and its
// Message-ID. An empty group is inlined by slog, so it adds only the
// fields that are known.
func envelopeAttrs(env spool.Envelope) slog.Attr {
	var attrs []any
	if env.MessageID != "" {
		attrs = append(attrs, slog.String("message_id", env.MessageID))
	}
	if env.ClientAddr != "" {
		attrs = append(attrs, slog.String("client_ip", env.ClientAddr))
	}
	if env.LocalUser != "" {
		attrs = append(attrs, slog.String("local_user", env.LocalUser))
	}
	if env.AuthUser != "" {
		attrs = append(attrs, slog.String("auth_user", env.AuthUser))
	}
	return slog.Group("", attrs...)
}

// spoolEventAttrs adds the schema's fields to a spool event's record: the
// envelope's, how long the attempt took, and, when the upstream answered,
// which upstream and its reply.
func spoolEventAttrs(upstreamAddr string, e spool.Event) []slog.Attr {
	attrs := []slog.Attr{envelopeAttrs(e.Envelope)}
	if e.Duration > 0 {
		attrs = append(attrs, slog.Int64("duration_ms", e.Duration.Milliseconds()))
	}
	switch e.Kind {
	case spool.EventDeferred, spool.EventFailed, spool.EventExpired:
		attrs = append(attrs, slog.String("upstream", upstreamAddr))
		if reply := upstreamReply(e.Err); reply != "" {
			attrs = append(attrs, slog.String("upstream_reply", reply))
		}
	}
	return attrs
}

// upstreamReply is the upstream's last reply in err ("550 5.1.1 no such
// user"), or "" when it did not answer. Replies to AUTH are scrubbed by
// the upstream package before they get here.
func upstreamReply(err error) string {
	var ue *upstream.Error
	if !errors.As(err, &ue) || ue.Code == 0 {
		return ""
	}
	if ue.EnhancedCode != ([3]int{}) && ue.EnhancedCode[0] != -1 {
		return fmt.Sprintf("%d %d.%d.%d %s", ue.Code, ue.EnhancedCode[0], ue.EnhancedCode[1], ue.EnhancedCode[2], ue.Message)
	}
	return fmt.Sprintf("%d %s", ue.Code, ue.Message)
}
