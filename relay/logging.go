package relay

import (
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/lmittmann/tint"
)

// NewLogger builds the log handler the configuration asks for: colour for a
// person at a terminal, JSON for journald and log shippers. "auto" decides
// by whether w is a terminal.
func NewLogger(w io.Writer, cfg LogConfig) *slog.Logger {
	format := cfg.Format
	if format == "auto" || format == "" {
		format = "json"
		if IsTerminal(w) {
			format = "color"
		}
	}
	switch format {
	case "color":
		return slog.New(tint.NewHandler(w, &tint.Options{Level: cfg.Level, TimeFormat: time.TimeOnly}))
	case "text":
		return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: cfg.Level}))
	default:
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: cfg.Level}))
	}
}

// IsTerminal reports whether w is a terminal, where a person reads colour.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
