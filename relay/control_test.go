package relay

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sealpost/certs/certstest"
	"sealpost/upstream/upstreamtest"
)

// TestControlFlushAndDelete: `queue delete` and `queue flush` through the
// control socket of a running relay, with the upstream down and then back.
func TestControlFlushAndDelete(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	up := tlsUpstream(t, ca)
	proxy := upstreamtest.NewProxy(t) // down
	cfg := newTestConfig(t, ca, proxy.Addr())
	cfg.Listen.ControlSocket = filepath.Join(t.TempDir(), "control.sock")
	env := startRelay(t, cfg, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if fi, err := os.Stat(cfg.Listen.ControlSocket); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("control socket: %v, mode %v; want 0660", err, fi.Mode())
	}
	for range 2 {
		if _, err := send(t, env.addr, "app@example.com", []string{"ops@example.net"}, testBody); err != nil {
			t.Fatal(err)
		}
	}
	// The first attempt fails (proxy down) and the retry interval is 1h.
	env.logs.waitRecord(t, "deferred", 1)
	msgs := assertQueueLen(t, cfg, 2)

	rep, err := Control(ctx, cfg.Listen.ControlSocket, ControlRequest{Op: "delete", ID: string(msgs[0].ID)})
	if err != nil || !rep.OK || rep.Queued != 1 {
		t.Fatalf("delete: %+v, %v", rep, err)
	}
	deleted := env.logs.waitRecord(t, "deleted", 1)
	if deleted[0]["queue_id"] != string(msgs[0].ID) {
		t.Errorf("deleted record %v", deleted[0])
	}
	if recs := env.logs.waitRecord(t, "delete-requested", 1); recs[0]["mail_from"] != "app@example.com" {
		t.Errorf("delete-requested record %v", recs[0])
	}
	rep, err = Control(ctx, cfg.Listen.ControlSocket, ControlRequest{Op: "delete", ID: string(msgs[0].ID)})
	if err != nil || rep.OK || !rep.NotFound {
		t.Errorf("second delete: %+v, %v; want not found", rep, err)
	}
	for _, bad := range []ControlRequest{{Op: "delete", ID: "../../etc/passwd"}, {Op: "reboot"}} {
		if rep, err := Control(ctx, cfg.Listen.ControlSocket, bad); err != nil || rep.OK || rep.Error == "" {
			t.Errorf("%+v: %+v, %v; want an error reply", bad, rep, err)
		}
	}

	proxy.Set(up.Addr())
	rep, err = Control(ctx, cfg.Listen.ControlSocket, ControlRequest{Op: "flush"})
	if err != nil || !rep.OK {
		t.Fatalf("flush: %+v, %v", rep, err)
	}
	got := up.Expect(t, 1)
	if len(got) != 1 {
		t.Fatalf("after flush the upstream got %d messages", len(got))
	}
	env.logs.waitRecord(t, "delivered", 1)
	env.stop()
	assertQueueLen(t, cfg, 0)
	if _, err := os.Stat(cfg.Listen.ControlSocket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket left behind after stop: %v", err)
	}
	if _, err := Control(ctx, cfg.Listen.ControlSocket, ControlRequest{Op: "flush"}); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("flush with no daemon: %v, want ErrNoDaemon", err)
	}
}
