package relay

import (
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"

	"sealpost/spool"
)

// ops is what running sealpost in production adds to the relay: metrics,
// the health endpoint and the audit file.
type ops struct {
	metrics   *metrics
	srv       *metricsServer // nil unless metrics.addr is set
	spoolFS   spool.FS       // the spool's file system, for the /readyz probe
	auditFile *reopenFile    // nil unless log.audit_file is set
}

// initOps sets up metrics and the audit destination. It runs before the
// spool opens, because opening already records audit events.
func (r *Relay) initOps(cfg *Config, opts Options) error {
	r.ops.spoolFS = opts.SpoolFS
	if r.ops.spoolFS == nil {
		r.ops.spoolFS = spool.OSFS()
	}
	r.ops.metrics = newMetrics(r)
	if cfg.Log.AuditFile != "" {
		f, err := openReopenFile(cfg.Log.AuditFile)
		if err != nil {
			return fmt.Errorf("log.audit_file: %w", err)
		}
		r.ops.auditFile = f
		// Always JSON and at least info: the file is for machines, and the
		// audit trail does not depend on how chatty the operational log is.
		r.audit = newAuditLog(slog.New(slog.NewJSONHandler(f, nil)))
	}
	r.audit.metrics = r.ops.metrics
	return nil
}

// closeOps releases the audit file; the last spool events are written
// before it is called.
func (r *Relay) closeOps() {
	if r.ops.auditFile != nil {
		r.ops.auditFile.Close()
	}
}

// Hangup is what SIGHUP does: reopen the audit file (logrotate has moved
// it), then load the configuration at path and apply it with Reload. A
// failure to reopen is logged and keeps the old file; an error is returned
// only when the new configuration was not applied.
func (r *Relay) Hangup(path string) error {
	if r.ops.auditFile != nil {
		if err := r.ops.auditFile.Reopen(); err != nil {
			r.log.Error("SIGHUP: log.audit_file not reopened; still writing to the old file", slog.Any("err", err))
		}
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		r.ops.metrics.reloaded(false)
		return err
	}
	return r.Reload(cfg)
}

// liveChanges names the reloadable settings that differ between old and
// cur, DKIM keys by domain and selector, so the reload's log line says
// what it changed.
func liveChanges(old, cur *Config) []string {
	if old == nil || cur == nil {
		return nil
	}
	var out []string
	diff := func(key string, a, b any) {
		if fmt.Sprint(a) != fmt.Sprint(b) {
			out = append(out, key)
		}
	}
	keyNames := func(c *Config) []string {
		var names []string
		for _, k := range c.DKIM.Keys {
			names = append(names, k.Domain+"/"+k.Selector)
		}
		return names
	}
	oldKeys, curKeys := keyNames(old), keyNames(cur)
	before := len(out)
	for _, k := range curKeys {
		if !slices.Contains(oldKeys, k) {
			out = append(out, "dkim.keys +"+k)
		}
	}
	for _, k := range oldKeys {
		if !slices.Contains(curKeys, k) {
			out = append(out, "dkim.keys -"+k)
		}
	}
	// A key file replaced in place (rotation under the same selector) is
	// reloaded too, but only its path can be compared here.
	if len(out) == before {
		diff("dkim.keys", old.DKIM.Keys, cur.DKIM.Keys)
	}
	diff("dkim.unsigned", old.DKIM.Unsigned, cur.DKIM.Unsigned)
	diff("dkim.expiration", old.DKIM.Expiration, cur.DKIM.Expiration)
	diff("policy.mode", old.Policy.Mode, cur.Policy.Mode)
	diff("policy.allowed_senders", old.Policy.AllowedSenders, cur.Policy.AllowedSenders)
	diff("policy.allowed_from_domains", old.Policy.AllowedFromDomains, cur.Policy.AllowedFromDomains)
	diff("policy.allow_any_from", old.Policy.AllowAnyFrom, cur.Policy.AllowAnyFrom)
	diff("limits.per_sender", old.Limits.PerSender, cur.Limits.PerSender)
	diff("limits.per_client", old.Limits.PerClient, cur.Limits.PerClient)
	diff("limits.global", old.Limits.Global, cur.Limits.Global)
	return out
}

// reopenFile is an append-only log file that can be reopened at the same
// path after logrotate moved it away. Each Write is one record, written
// whole under the lock, so records never interleave across a reopen.
type reopenFile struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

func openReopenFile(path string) (*reopenFile, error) {
	f, err := openAppend(path)
	if err != nil {
		return nil, err
	}
	return &reopenFile{path: path, f: f}, nil
}

// openAppend opens path for appending, creating it 0640: the audit trail
// names senders and recipients, which the log reader group may see and
// others may not.
func openAppend(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
}

func (r *reopenFile) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return 0, os.ErrClosed
	}
	return r.f.Write(p)
}

// Reopen switches to a fresh file at the path; if that cannot be opened,
// records keep going to the old one rather than nowhere.
func (r *reopenFile) Reopen() error {
	f, err := openAppend(r.path)
	if err != nil {
		return err
	}
	r.mu.Lock()
	old := r.f
	r.f = f
	r.mu.Unlock()
	if old != nil {
		return old.Close()
	}
	return nil
}

func (r *reopenFile) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}
