package upstream_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"sealpost/certs"
	"sealpost/certs/certstest"
	"sealpost/upstream"
	"sealpost/upstream/upstreamtest"
)

// writeCounter counts the writes a connection makes. Below crypto/tls each
// write is one TLS record, so the count is what a message costs in records
// and (on an idle link) in send system calls.
type writeCounter struct {
	net.Conn
	writes *atomic.Int64
}

func (c *writeCounter) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// benchBody is a message of about size bytes in CRLF lines; 4 KiB is what
// the measurements used.
func benchBody(size int) string {
	var b strings.Builder
	b.WriteString("From: app@example.com\r\nTo: a@example.org\r\nSubject: bench\r\n\r\n")
	line := strings.Repeat("0123456789", 7) + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.String()
}

// BenchmarkPoolDeliver sends messages one after another over one pooled
// connection (the relay's steady state) to the in-process upstream over
// loopback TLS. The server runs in the same process, so ns/op and
// cpu-ns/op include its work too; writes/op is the client's TLS records per
// message.
func BenchmarkPoolDeliver(b *testing.B) {
	for _, tt := range []struct {
		rcpts int
		size  int
	}{{1, 4 << 10}, {5, 4 << 10}, {1, 64 << 10}} {
		b.Run(fmt.Sprintf("rcpt=%d/size=%dKiB", tt.rcpts, tt.size>>10), func(b *testing.B) {
			ca := certstest.NewCA(b)
			srv := upstreamtest.New(b, upstreamtest.Options{
				TLS:         upstreamtest.TLSStartTLS,
				Certificate: certstest.Leaf(b, ca, serverName, "127.0.0.1"),
				Users:       map[string]string{user: password},
			})
			tlsConfig, err := certs.ClientConfig(certs.ClientOptions{ServerName: serverName, ExtraRoots: ca.Pool()})
			if err != nil {
				b.Fatal(err)
			}
			var writes atomic.Int64
			var d net.Dialer
			c, err := upstream.NewClient(upstream.Config{
				Addr: srv.Addr(), TLS: tlsConfig, Username: user, Secret: staticSecret(password),
				CommandTimeout: 10 * time.Second, DialTimeout: 5 * time.Second,
				Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
					conn, err := d.DialContext(ctx, network, addr)
					if err != nil {
						return nil, err
					}
					return &writeCounter{Conn: conn, writes: &writes}, nil
				},
			})
			if err != nil {
				b.Fatal(err)
			}
			p := upstream.NewPool(c, upstream.PoolConfig{MaxConnections: 1, MaxMessagesPerConnection: 1 << 30})
			defer p.Close()
			to := make([]string, tt.rcpts)
			for i := range to {
				to[i] = fmt.Sprintf("r%d@example.org", i)
			}
			body := []byte(benchBody(tt.size))
			msg := upstream.Message{From: "app@example.com", To: to, Size: int64(len(body))}
			ctx := context.Background()
			// The first message pays for the connection; measure the rest.
			if _, _, err := p.Deliver(ctx, msg, bytes.NewReader(body)); err != nil {
				b.Fatal(err)
			}
			writes.Store(0)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			cpu0, cpuOK := processCPU()
			b.ResetTimer()
			for range b.N {
				perRcpt, _, err := p.Deliver(ctx, msg, bytes.NewReader(body))
				if err != nil {
					b.Fatal(err)
				}
				for _, e := range perRcpt {
					if e != nil {
						b.Fatal(e)
					}
				}
			}
			b.StopTimer()
			if cpu1, ok := processCPU(); ok && cpuOK {
				// Client and in-process server together.
				b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
			}
			b.ReportMetric(float64(writes.Load())/float64(b.N), "writes/op")
			if n := len(srv.Messages()); n != b.N+1 {
				b.Fatalf("upstream got %d messages, want %d", n, b.N+1)
			}
		})
	}
}
