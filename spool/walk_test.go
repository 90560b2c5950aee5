package spool

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// craftQueue writes n well-formed queued messages straight into dir (as an
// earlier process would have left them, without an fsync each), plus one
// metadata file cut short and one that is not JSON, placed among them. It
// returns the well-formed IDs in order and the two damaged ones.
func craftQueue(t *testing.T, dir string, n int) (good []ID, damaged []ID) {
	t.Helper()
	for _, sub := range []string{dirTmp, dirBody, dirQueue, dirFailed, dirCorrupt} {
		if err := (osFS{}).MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	for i := range n + 2 {
		id := newID(start.Add(time.Duration(i) * time.Second))
		meta := metaJSON(t, testMessage(id, Pending))
		switch i {
		case n / 3:
			meta = meta[:len(meta)/2]
			damaged = append(damaged, id)
		case 2 * n / 3:
			meta = "not JSON at all"
			damaged = append(damaged, id)
		default:
			good = append(good, id)
		}
		writeFile(t, filepath.Join(dir, dirQueue, string(id)+extMeta), meta)
		writeFile(t, filepath.Join(dir, dirBody, string(id)+extBody), "Subject: x\r\n\r\nbody\r\n")
	}
	return good, damaged
}

// TestWalkStreamsInIDOrder: Walk hands out every readable message once, in
// ID order, across the chunks it decodes ahead, skipping what cannot be
// read; List is the same; an error from fn stops the walk at once.
func TestWalkStreamsInIDOrder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	n := 2*walkChunk + walkChunk/2
	good, _ := craftQueue(t, dir, n)
	s, err := Open(dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	var walked []ID
	if err := s.Walk(func(m *Message) error {
		walked = append(walked, m.ID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(walked, good) {
		t.Fatalf("Walk gave %d messages (first %v), want the %d well-formed ones in ID order", len(walked), walked[:min(3, len(walked))], len(good))
	}
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var listed []ID
	for _, m := range list {
		listed = append(listed, m.ID)
	}
	if !slices.Equal(listed, good) {
		t.Errorf("List gave %d messages, want the %d Walk gives", len(listed), len(good))
	}

	stop := errors.New("reader went away")
	calls := 0
	err = s.Walk(func(*Message) error {
		calls++
		if calls == walkChunk+7 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != walkChunk+7 {
		t.Errorf("Walk after fn failed: %v after %d calls; want fn's error after %d calls", err, calls, walkChunk+7)
	}
}

// TestRecoveryLoadsLargeQueue: the recovery reads metadata in parallel
// chunks, and must still load every message, quarantine the damaged ones
// wherever they fall, and say when it is done.
func TestRecoveryLoadsLargeQueue(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good, damaged := craftQueue(t, dir, 2*walkChunk+3)
	ev := newEvents()
	s, err := Open(dir, Options{Events: ev.record})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	loaded := ev.wait(t, EventLoaded, "")
	if loaded.Queued != len(good) || loaded.Err != nil {
		t.Errorf("EventLoaded: %d messages, err %v; want %d, no error", loaded.Queued, loaded.Err, len(good))
	}
	if s.Loading() {
		t.Error("Loading() after EventLoaded")
	}
	if n, _ := s.Stats(); n != len(good) {
		t.Errorf("Stats counts %d, want %d", n, len(good))
	}
	corrupt := files(t, dir, dirCorrupt)
	for _, id := range damaged {
		for _, name := range []string{string(id) + extMeta, string(id) + extBody} {
			if !slices.Contains(corrupt, name) {
				t.Errorf("%s not quarantined; corrupt/ holds %v", name, corrupt)
			}
		}
	}
	corrupts := 0
	for _, k := range ev.kinds() {
		if k == EventCorrupt {
			corrupts++
		}
	}
	if corrupts != len(damaged) {
		t.Errorf("%d corrupt events, want %d", corrupts, len(damaged))
	}
}

// TestLoadedEventForEmptyQueue: a fresh spool also reports that loading
// is over, with nothing loaded.
func TestLoadedEventForEmptyQueue(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	if e := te.ev.wait(t, EventLoaded, ""); e.Queued != 0 || e.Err != nil {
		t.Errorf("EventLoaded on an empty spool: %d messages, err %v", e.Queued, e.Err)
	}
}

// TestReadFileSizes: osFS.ReadFile ends on a short read instead of asking
// again for EOF; files of every size around its buffer must still come
// back whole.
func TestReadFileSizes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, size := range []int{0, 1, 4095, 4096, 4097, 8192, 50000} {
		name := filepath.Join(dir, fmt.Sprint(size))
		want := strings.Repeat("0123456789abcdef", size/16+1)[:size]
		writeFile(t, name, want)
		got, err := osFS{}.ReadFile(name)
		if err != nil || string(got) != want {
			t.Errorf("ReadFile of %d bytes: %d bytes, err %v", size, len(got), err)
		}
	}
	if _, err := (osFS{}).ReadFile(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFile of a missing file: %v, want fs.ErrNotExist", err)
	}
}

// TestWalkLeavesOutTheHeader: a listing skips the Header (the DKIM
// signature, most of each message's metadata) and keeps the rest; Get
// still has it, from the trailer and from a metadata file alike.
func TestWalkLeavesOutTheHeader(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, Options{})
	const header = "DKIM-Signature: v=1; a=rsa-sha256; b=c2lnbmF0dXJl\r\n"
	put := func() ID {
		id := te.s.NewID()
		err := te.s.PutID(context.Background(), id, Envelope{From: "app@example.com", To: []string{"a@x", "b@x"}},
			strings.NewReader("Subject: s\r\n\r\nbody\r\n"), func() ([]byte, error) { return []byte(header), nil })
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	inTrailer, inFile := put(), put()
	// A metadata file, as after an attempt that left a recipient pending.
	m, err := te.s.Get(inFile)
	if err != nil {
		t.Fatal(err)
	}
	m.Attempts = 1
	if err := te.s.writeMeta(m, dirQueue, te.s.queueSync); err != nil {
		t.Fatal(err)
	}
	list, err := te.s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("listed %d, want 2", len(list))
	}
	for _, l := range list {
		g, err := te.s.Get(l.ID)
		if err != nil {
			t.Fatal(err)
		}
		if l.Header != "" {
			t.Errorf("%s listed with its Header %q", l.ID, l.Header)
		}
		if g.Header != header {
			t.Errorf("%s: Get has Header %q, want %q", l.ID, g.Header, header)
		}
		g.Header = ""
		if !reflect.DeepEqual(l, g) {
			t.Errorf("%s listed as %+v, want what Get has but the Header: %+v", l.ID, l, g)
		}
	}
	attempts := map[ID]int{}
	for _, l := range list {
		attempts[l.ID] = l.Attempts
	}
	if a, ok := attempts[inTrailer]; !ok || a != 0 {
		t.Errorf("message with its metadata in the trailer: listed %v, attempts %d; want listed, 0", ok, a)
	}
	if a, ok := attempts[inFile]; !ok || a != 1 {
		t.Errorf("message with a metadata file: listed %v, attempts %d; want listed, 1 (the file's)", ok, a)
	}
}

// TestListingRefusesWhatDeliveryRefuses: metadata that Get (and so
// delivery) finds corrupt for its Header is left out of a listing too,
// although the listing does not decode the Header: `queue list` must not
// show as queued what the first attempt quarantines.
func TestListingRefusesWhatDeliveryRefuses(t *testing.T) {
	t.Parallel()
	const header = "DKIM-Signature: v=1; b=c2ln\r\n"
	for _, tt := range []struct {
		name   string
		damage func(json string) string
	}{
		{"size less than the header", func(j string) string {
			return strings.Replace(j, `"Size": 3`, `"Size": 2`, 1)
		}},
		{"header not a string", func(j string) string {
			return strings.Replace(j, `"Header": "DKIM-Signature: v=1; b=c2ln\r\n"`, `"Header": 5`, 1)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			te := newTestEnv(t, Options{})
			id := te.s.NewID()
			m := &Message{ID: id, Envelope: Envelope{From: "a@x", To: []string{"b@x"}}, Size: int64(len(header)),
				Header: header, Rcpts: []Rcpt{{Addr: "b@x", State: Pending}}}
			data, err := encodeMessage(m)
			if err != nil {
				t.Fatal(err)
			}
			damaged := strings.Replace(string(data), fmt.Sprintf(`"Size": %d`, len(header)), `"Size": 3`, 1)
			damaged = tt.damage(damaged)
			if damaged == string(data) {
				t.Fatalf("the damage did not apply to %s", data)
			}
			writeFile(t, filepath.Join(te.dir, dirQueue, string(id)+extMeta), damaged)
			writeFile(t, filepath.Join(te.dir, dirBody, string(id)+extBody), header+"Subject: x\r\n\r\nbody\r\n")
			if _, err := te.s.Get(id); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Get: %v, want ErrCorrupt", err)
			}
			list, err := te.s.List()
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 0 {
				t.Errorf("listed %+v, which Get finds corrupt", list[0])
			}
		})
	}
}
