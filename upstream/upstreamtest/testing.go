package upstreamtest

import (
	"context"
	"time"
)

// TB is the part of testing.TB the helpers need. Taking an interface keeps
// the testing package out of the sealpost binary, which links this package
// for `sealpost demo`; *testing.T and *testing.B satisfy it.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// DefaultWait bounds Expect.
const DefaultWait = 10 * time.Second

// New starts a server for one test and closes it when the test ends.
func New(t TB, opts Options) *Server {
	t.Helper()
	s, err := NewServer(opts)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Expect waits up to DefaultWait for at least n messages and fails the test
// if they do not arrive.
func (s *Server) Expect(t TB, n int) []Received {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), DefaultWait)
	defer cancel()
	msgs, err := s.WaitFor(ctx, n)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return msgs
}
