package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"sealpost/spool"
	"sealpost/upstream/upstreamtest"
)

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }

// TestQueueListReportsWriteErrors: a listing that could not be written in
// full (a full disk, a closed pipe) is a failure, not exit 0 with half the
// queue.
func TestQueueListReportsWriteErrors(t *testing.T) {
	t.Parallel()
	up, setup := newTLSUpstream(t, upstreamtest.Options{})
	config := setup.writeConfig(t, freePort(t), up.Addr(), "")
	s, err := spool.Open(setup.spoolDir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(context.Background(), spool.Envelope{From: "app@example.com", To: []string{"ops@example.net"}}, strings.NewReader("Subject: x\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	for _, args := range [][]string{{"list"}, {"list", "-json"}} {
		var stderr bytes.Buffer
		code := cmdQueue(append([]string{"-config", config}, args...), failingWriter{}, &stderr)
		if code == exitOK || !strings.Contains(stderr.String(), "no space left on device") {
			t.Errorf("queue %v to a failing writer: exit %d, stderr %q; want a failure naming the error", args, code, stderr.String())
		}
	}
}
