package relay

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/emersion/go-smtp"
)

// auditLog writes one structured record per message event. Field names are
// stable (admins grep and alert on them); values never include a secret or
// a message body.
type auditLog struct {
	log *slog.Logger
	// metrics counts every record (metrics.go), so counters and the log
	// cannot disagree; nil counts nothing.
	metrics *metrics
}

func newAuditLog(l *slog.Logger) *auditLog {
	return &auditLog{log: l.With(slog.String("log", "audit"))}
}

func (a *auditLog) record(event string, attrs ...slog.Attr) {
	a.metrics.observe(event, attrs)
	ctx := context.Background()
	// Asked first so that, when the operational log is above info and no
	// audit file is set, the record is not copied only to be dropped.
	if !a.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	a.log.LogAttrs(ctx, slog.LevelInfo, event, append([]slog.Attr{slog.String("event", event)}, attrs...)...)
}

func (a *auditLog) refused(ip netip.Addr, rule string, reply *smtp.SMTPError) {
	a.record("rejected",
		slog.String("client_ip", addrString(ip)),
		slog.String("rule", rule),
		slog.String("reply", smtpErrorString(reply)))
}

func addrString(ip netip.Addr) string {
	if !ip.IsValid() {
		return "local"
	}
	return ip.String()
}
