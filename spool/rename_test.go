package spool

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// TestRenameFreshNeverReplaces: a rename to a fresh name fails, changing
// nothing, when the name is taken, whichever way the platform does it.
func TestRenameFreshNeverReplaces(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		rename func(oldpath, newpath string) error
	}{{"link, then remove", renameFresh}, {"check, then rename", renameIfAbsent}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			from, taken, free := filepath.Join(dir, "from"), filepath.Join(dir, "taken"), filepath.Join(dir, "free")
			writeFile(t, from, "kept file")
			writeFile(t, taken, "queued message")
			err := tt.rename(from, taken)
			if !errors.Is(err, fs.ErrExist) {
				t.Errorf("rename over an existing file: %v, want fs.ErrExist", err)
			}
			for name, want := range map[string]string{from: "kept file", taken: "queued message"} {
				if got, err := os.ReadFile(name); err != nil || string(got) != want {
					t.Errorf("%s after the refused rename: %q, %v; want %q", filepath.Base(name), got, err, want)
				}
			}
			if err := tt.rename(from, free); err != nil {
				t.Fatalf("rename to a free name: %v", err)
			}
			if got, err := os.ReadFile(free); err != nil || string(got) != "kept file" {
				t.Errorf("renamed file: %q, %v", got, err)
			}
			if _, err := os.Stat(from); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("old name after the rename: %v, want gone", err)
			}
		})
	}
}

// takenNames puts a file of its own (a decoy) under the name a fresh
// rename is about to take, on every second call (every call while
// always is set): the kernel then finds the name taken, as if the ID
// drawn were another message's.
type takenNames struct {
	FS
	always atomic.Bool
	calls  atomic.Int64

	mu      sync.Mutex
	decoys  map[string]string // path -> content
	renamed map[string]int    // extension -> fresh renames that took a name
	hit     map[string]int    // extension -> decoys met
}

func newTakenNames() *takenNames {
	return &takenNames{FS: OSFS(), decoys: map[string]string{}, renamed: map[string]int{}, hit: map[string]int{}}
}

func (f *takenNames) RenameFresh(oldpath, newpath string) error {
	ext := filepath.Ext(newpath)
	if f.always.Load() || f.calls.Add(1)%2 == 1 {
		content := "decoy " + filepath.Base(newpath)
		if err := os.WriteFile(newpath, []byte(content), 0o600); err != nil {
			return err
		}
		f.mu.Lock()
		f.decoys[newpath] = content
		f.hit[ext]++
		f.mu.Unlock()
	}
	err := f.FS.RenameFresh(oldpath, newpath)
	if err == nil {
		f.mu.Lock()
		f.renamed[ext]++
		f.mu.Unlock()
	}
	return err
}

// TestFreshRenamesNeverReplace: the renames of delivered messages' files
// kept for reuse (to <id>.reuse at delivery, to <id>.eml at the refill)
// never replace a file under the name drawn; they draw another ID, and
// every message is still stored and delivered exactly.
func TestFreshRenamesNeverReplace(t *testing.T) {
	t.Parallel()
	fsys := newTakenNames()
	deliverNumbered(t, fsys, 24)
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	for path, content := range fsys.decoys {
		if got, err := os.ReadFile(path); err != nil || string(got) != content {
			t.Errorf("%s: %q, %v; want the file that was there, %q", filepath.Base(path), got, err, content)
		}
	}
	t.Logf("decoys met %v, fresh renames %v", fsys.hit, fsys.renamed)
	for _, ext := range []string{extReuse, extBody} {
		if fsys.hit[ext] == 0 || fsys.renamed[ext] == 0 {
			t.Errorf("renames to %s: %d decoys met, %d done; want both", ext, fsys.hit[ext], fsys.renamed[ext])
		}
	}
}

// TestReuseGivesUpOnTakenNames: when every ID drawn is taken, a delivered
// message's file is not kept (reuse reports false, and its caller removes
// the file) and nothing is replaced.
func TestReuseGivesUpOnTakenNames(t *testing.T) {
	t.Parallel()
	fsys := newTakenNames()
	te := newTestEnv(t, Options{FS: fsys, ReadyFiles: 4})
	waitReady(t, te.s, 4)
	id := put(t, te.s, "Subject: x\r\n\r\nbody\r\n", "a@x")
	fsys.always.Store(true)
	if te.s.ready.reuse(id) {
		t.Fatal("the file was kept although every name drawn was taken")
	}
	if _, err := os.Stat(filepath.Join(te.dir, dirBody, string(id)+extBody)); err != nil {
		t.Errorf("the file under its own name, for the caller to remove: %v", err)
	}
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	if len(fsys.decoys) != 3 {
		t.Errorf("%d names drawn, want 3", len(fsys.decoys))
	}
	for path, content := range fsys.decoys {
		if got, err := os.ReadFile(path); err != nil || string(got) != content {
			t.Errorf("%s: %q, %v; want %q", filepath.Base(path), got, err, content)
		}
	}
}
