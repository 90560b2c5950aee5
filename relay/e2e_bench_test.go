package relay

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sealpost/certs/certstest"
)

// BenchmarkRelayEndToEnd is the whole path of a message in one process,
// with the production setup: a client submits a 4 KiB message over
// loopback SMTP on a connection of its own (as smtp-source and most
// legacy programs do), the relay checks it, signs it with RSA-2048 (or
// not), fsyncs it into the spool before its 250, and delivers it over
// verified STARTTLS + AUTH to an in-process upstream on loopback. One op
// is one message; the timer stops when the upstream has the last one, so
// msgs/s is end to end, drain included.
//
//	go test -run '^$' -bench RelayEndToEnd -benchtime 2000x ./relay
//
// The clients, the relay and the upstream share the machine's cores, as
// they do in the kit (../shared/bench); its figures are the ones that
// compare with Postfix. This one is for A/B runs of a change
// (benchstat), with no setup outside `go test`.
func BenchmarkRelayEndToEnd(b *testing.B) {
	for _, signed := range []bool{false, true} {
		for _, clients := range []int{1, 10} {
			name := fmt.Sprintf("dkim=%s/c=%d", map[bool]string{false: "off", true: "rsa2048"}[signed], clients)
			b.Run(name, func(b *testing.B) { benchEndToEnd(b, signed, clients) })
		}
	}
}

func benchEndToEnd(b *testing.B, signed bool, clients int) {
	ca := certstest.NewCA(b)
	up := tlsUpstream(b, ca)
	cfg := newTestConfig(b, ca, up.Addr())
	// smtp-source's setup: one sender, so the limits (which would rightly
	// throttle it) are off; the log at warn, as in the kit's runs
	// (bench/sealpost.sh), so without the audit records, which
	// BenchmarkAuditRecord measures.
	cfg.Limits.PerSender = RateLimit{}
	cfg.Limits.PerClient = RateLimit{}
	cfg.Log.Level = 4
	if signed {
		cfg.DKIM = keySetups(b, newTestKeys(b))[0].cfg // rsa2048
		// The defaults a loaded file gets (dkim.unsigned).
		if err := cfg.validate(); err != nil {
			b.Fatal(err)
		}
	}
	addr := runBenchRelay(b, cfg)
	msg := benchMessage()
	if !bytes.HasSuffix(msg, []byte("\r\n")) {
		msg = append(msg, "\r\n"...) // cut at 4 KiB, perhaps within a line
	}
	data := append(msg[:len(msg):len(msg)], ".\r\n"...) // with its end, once

	// One message first: the upstream connection is up and verified
	// before the clock starts, as in a relay that has been running.
	if err := submitBench(addr, data); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := up.WaitFor(ctx, 1); err != nil {
		b.Fatalf("the first message did not arrive: %v", err)
	}

	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := submitBench(addr, data); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	// Bounded: a relay that stops delivering fails the benchmark instead
	// of hanging it.
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	got, err := up.WaitFor(ctx, 1+b.N)
	if err != nil {
		b.Fatalf("%d of %d messages reached the upstream: %v", len(up.Messages())-1, b.N, err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	for i, m := range got[1:] {
		if hasSig := slices.Contains(fieldNames(m.Data), "DKIM-Signature"); hasSig != signed {
			b.Fatalf("DKIM-Signature in delivered message %d of %d: %v, want %v", i+1, b.N, hasSig, signed)
		}
	}
}

// submitBench sends data (CRLF lines, none starting with a dot, then the
// ".\r\n" that ends it) on a connection of its own and waits for its 250
// and the 221.
func submitBench(addr string, data []byte) error {
	bc, err := dialBench(addr)
	if err != nil {
		return err
	}
	defer bc.c.Close()
	err = bc.cmds("EHLO client.test\r\n", "250",
		"MAIL FROM:<cron@example.com>\r\n", "250",
		"RCPT TO:<ops@example.net>\r\n", "250",
		"DATA\r\n", "354")
	if err != nil {
		return err
	}
	if _, err := bc.c.Write(data); err != nil {
		return err
	}
	if err := bc.reply("250"); err != nil {
		return fmt.Errorf("end of data: %w", err)
	}
	return bc.cmd("QUIT\r\n", "221")
}
