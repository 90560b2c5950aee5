package upstreamtest

import (
	"io"
	"net"
	"sync"
)

// Proxy forwards TCP connections on 127.0.0.1 to a target a test can
// change, so "the upstream" can be down, come back, or start offering TLS
// at one fixed address.
type Proxy struct {
	ln     net.Listener
	mu     sync.Mutex
	target string // "" = down: connections are closed at once
}

// NewProxy starts a proxy that is down until Set names a target; it stops
// when the test ends.
func NewProxy(t TB) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("upstreamtest: %v", err)
	}
	p := &Proxy{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go p.serve()
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Set makes new connections go to target ("" = down).
func (p *Proxy) Set(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		target := p.target
		p.mu.Unlock()
		go func() {
			defer c.Close()
			if target == "" {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			defer u.Close()
			go func() {
				io.Copy(u, c)
				u.(*net.TCPConn).CloseWrite()
			}()
			io.Copy(c, u)
		}()
	}
}
