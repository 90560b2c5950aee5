package spool

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestLargeQueueRestart measures what a restart costs with a large queue:
// how long Open takes (the relay listens right after), how long the
// background recovery and a List take, and the heap the queue holds. It
// writes SEALPOST_SCALE messages (e.g. 100000) into a temporary spool, so it
// only runs when asked:
//
//	SEALPOST_SCALE=100000 go test -run LargeQueueRestart -v -timeout 30m ./spool
//
// It reports figures and asserts only what must hold at any size.
func TestLargeQueueRestart(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SEALPOST_SCALE"))
	if n <= 0 {
		t.Skip("set SEALPOST_SCALE=100000 to measure a large queue")
	}
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("x", 4000) + "\r\n"
	const writers = 64
	var wg sync.WaitGroup
	start := time.Now()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += writers {
				if _, err := s.Put(context.Background(), Envelope{From: "a@example.com", To: []string{"b@example.net"}}, strings.NewReader(body)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("queued %d messages in %v", n, time.Since(start))
	s.Close()

	start = time.Now()
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t.Logf("Open: %v", time.Since(start))
	if err := s.waitRecovered(); err != nil {
		t.Fatal(err)
	}
	t.Logf("recovered: %v", time.Since(start))
	runtime.GC()
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)
	t.Logf("heap in use with the queue loaded: %.1f MiB", float64(mem.HeapAlloc)/(1<<20))

	ro, err := Open(dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	list, err := ro.List()
	t.Logf("List (as queue list does, read-only): %d in %v", len(list), time.Since(start))
	if err != nil || len(list) != n {
		t.Fatalf("List: %d, %v; want %d", len(list), err, n)
	}
}

// opCounter counts directory listings, reads of queue/ metadata files
// (those that exist and those that do not) and reads of trailers.
type opCounter struct {
	FS
	readDirs, metaReads, tailReads atomic.Int64
}

func (c *opCounter) ReadTail(name string, buf []byte) ([]byte, int64, error) {
	c.tailReads.Add(1)
	return c.FS.ReadTail(name, buf)
}

func (c *opCounter) ReadDir(name string) ([]fs.DirEntry, error) {
	c.readDirs.Add(1)
	return c.FS.ReadDir(name)
}

func (c *opCounter) ReadDirNames(name string) ([]string, error) {
	c.readDirs.Add(1)
	return c.FS.ReadDirNames(name)
}

func (c *opCounter) ReadFile(name string) ([]byte, error) {
	if filepath.Base(filepath.Dir(name)) == dirQueue {
		c.metaReads.Add(1)
	}
	return c.FS.ReadFile(name)
}

// TestQueueWorkIsLinear: restarting with a queue of n messages and
// delivering them all lists each directory a fixed number of times and
// reads each message's metadata a bounded number of times, whatever n is:
// no step rescans the spool per message (which would make a large queue
// quadratic). It counts operations; it does not time anything.
func TestQueueWorkIsLinear(t *testing.T) {
	t.Parallel()
	type counts struct{ readDirs, metaReads, tailReads, recoveryReads int64 }
	measure := func(n int) counts {
		te := newTestEnv(t, Options{})
		for i := range n {
			put(t, te.s, fmt.Sprintf("Subject: %d\r\n\r\nbody\r\n", i), "a@example.org")
		}
		te.s.Close()
		c := &opCounter{FS: OSFS()}
		s := te.open(t, Options{FS: c})
		if err := s.waitRecovered(); err != nil {
			t.Fatal(err)
		}
		recoveryReads := c.metaReads.Load() + c.tailReads.Load()
		run(t, s, &deliverer{})
		for range n {
			te.ev.wait(t, EventDelivered, "")
		}
		return counts{c.readDirs.Load(), c.metaReads.Load(), c.tailReads.Load(), recoveryReads}
	}
	const n = 3 * minRecentChecked
	small, large := measure(10), measure(n)
	if small.readDirs != large.readDirs {
		t.Errorf("directory listings grow with the queue: %d for 10 messages, %d for %d", small.readDirs, large.readDirs, n)
	}
	// Recovery loads messages whose metadata was never changed from the
	// listing alone, except the newest few it looks at for ready files a
	// crash left; each trailer is read once more, at its delivery, without
	// asking queue/ for a file the listing did not show.
	if large.recoveryReads != minRecentChecked {
		t.Errorf("recovery read %d metadata files and trailers of %d messages that never had an attempt, want the newest %d", large.recoveryReads, n, minRecentChecked)
	}
	if large.tailReads != n+minRecentChecked || large.metaReads != 0 {
		t.Errorf("%d metadata file and %d trailer reads to recover and deliver %d messages, want no metadata file reads and one trailer read each, plus the recovery's", large.metaReads, large.tailReads, n)
	}
}
