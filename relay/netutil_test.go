package relay

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

func dialRelay(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readLine(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && line == "" {
		t.Fatalf("read: %v", err)
	}
	return strings.TrimRight(line, "\r\n")
}

// readGreeting connects and returns the first line the relay sends.
func readGreeting(t *testing.T, addr string) string {
	t.Helper()
	c := dialRelay(t, addr)
	defer c.Close()
	return readLine(t, c)
}

// acceptOne accepts one connection on ln in the background; the channel
// is closed without a value if Accept fails.
func acceptOne(ln net.Listener) <-chan net.Conn {
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	return accepted
}
