package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"text/tabwriter"

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

// TestTableMatchesTabwriter: `queue list` used text/tabwriter, which keeps
// its own copy of every cell; table replaced it and must print the same
// bytes, wide characters included.
func TestTableMatchesTabwriter(t *testing.T) {
	t.Parallel()
	tests := map[string][][]string{
		"header only": {queueColumns},
		"ascii": {
			queueColumns,
			{"20261127T152514-24rvcrkiuc", "40s", "4.4KiB", "app@example.com", "ops@example.net (pending)", "0", "now", ""},
			{"20261127T152515-aaaaaaaaaa", "2h05m", "25.0MiB", "<>", "a@x (failed), b@y (pending)", "12", "in 30m", "451 4.3.0 try again later"},
		},
		"wide characters": {
			queueColumns,
			{"20261127T152514-24rvcrkiuc", "1d02h", "1B", "jörg@exämple.de", "用户@例子.广告 (pending)", "3", "now", "550 5.1.1 ünknown"},
			{"20261127T152515-bbbbbbbbbb", "0s", "999B", "a@b", "c@d (delivered)", "1", "now", "…"},
		},
	}
	for name, rows := range tests {
		var want bytes.Buffer
		tw := tabwriter.NewWriter(&want, 0, 8, 2, ' ', 0)
		for _, row := range rows {
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
		tw.Flush()
		var got bytes.Buffer
		if err := (&table{rows: rows}).write(&got); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Errorf("%s: table wrote\n%s\ntabwriter writes\n%s", name, got.String(), want.String())
		}
	}
}

// TestQueueListJSONStreamsTheSameDocument: `queue list -json` writes its
// entries one by one; the document must be what encoding the whole list
// at once gives, for an empty queue, one message and several.
func TestQueueListJSONStreamsTheSameDocument(t *testing.T) {
	t.Parallel()
	up, setup := newTLSUpstream(t, upstreamtest.Options{})
	config := setup.writeConfig(t, freePort(t), up.Addr(), "")
	for _, n := range []int{0, 1, 3} {
		{
			s, err := spool.Open(setup.spoolDir, spool.Options{})
			if err != nil {
				t.Fatal(err)
			}
			for i := range n - countQueued(t, setup.spoolDir) {
				env := spool.Envelope{From: fmt.Sprintf("app%d@example.com", i), To: []string{"ops@example.net", "jörg@exämple.de"}}
				if _, err := s.Put(context.Background(), env, strings.NewReader("Subject: x\r\n\r\nbody\r\n")); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
		}
		var stdout, stderr bytes.Buffer
		if code := cmdQueue([]string{"-config", config, "list", "-json"}, &stdout, &stderr); code != exitOK {
			t.Fatalf("queue list -json: exit %d, %s", code, stderr.String())
		}
		var entries []queueEntry
		if err := json.Unmarshal(stdout.Bytes(), &entries); err != nil {
			t.Fatalf("%d messages: output is not one JSON array: %v\n%s", n, err, stdout.String())
		}
		if len(entries) != n {
			t.Fatalf("%d messages: %d entries", n, len(entries))
		}
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetIndent("", "  ")
		if entries == nil {
			entries = []queueEntry{}
		}
		if err := enc.Encode(entries); err != nil {
			t.Fatal(err)
		}
		if stdout.String() != want.String() {
			t.Errorf("%d messages: streamed\n%s\nencoded at once\n%s", n, stdout.String(), want.String())
		}
	}
}

func countQueued(t *testing.T, dir string) int {
	t.Helper()
	s, err := spool.Open(dir, spool.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}
