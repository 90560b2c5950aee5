package relay

import (
	"bytes"
	"io"
	"log/slog"
	"strings"
	"testing"
)

// TestAuditRecordOffCopiesNothing: with the log above info and no audit
// file, a record is still counted but not built.
func TestAuditRecordOffCopiesNothing(t *testing.T) {
	a := newAuditLog(slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn})))
	attrs := []slog.Attr{slog.String("client_ip", "127.0.0.1"), slog.String("mail_from", "a@example.com")}
	if n := testing.AllocsPerRun(100, func() { a.record("received", attrs...) }); n != 0 {
		t.Errorf("a record nobody reads allocated %v times", n)
	}
	var buf bytes.Buffer
	on := newAuditLog(slog.New(slog.NewJSONHandler(&buf, nil)))
	on.record("received", attrs...)
	if !strings.Contains(buf.String(), `"event":"received"`) || !strings.Contains(buf.String(), `"mail_from":"a@example.com"`) {
		t.Errorf("record at info: %s", buf.String())
	}
}
