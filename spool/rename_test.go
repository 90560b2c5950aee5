package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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
	}{{"this platform", renameFresh}, {"check then rename", renameIfAbsent}} {
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

// takenNames makes the first few fresh renames find their name taken, as
// if the ID drawn were another file's.
type takenNames struct {
	FS
	taken atomic.Int64 // how many renames still find their name taken
}

func (f *takenNames) RenameFresh(oldpath, newpath string) error {
	if f.taken.Add(-1) >= 0 {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: fs.ErrExist}
	}
	return f.FS.RenameFresh(oldpath, newpath)
}

// TestReusedFileDrawsAnotherID: a delivered message's file kept for reuse
// never takes the name of an existing file; its rename draws another ID,
// and gives up (the file is removed, not kept) after a few.
func TestReusedFileDrawsAnotherID(t *testing.T) {
	t.Parallel()
	for _, taken := range []int64{1, 3} {
		t.Run(fmt.Sprintf("%d taken", taken), func(t *testing.T) {
			t.Parallel()
			fsys := &takenNames{FS: OSFS()}
			te := newTestEnv(t, Options{FS: fsys, ReadyFiles: 4})
			waitReady(t, te.s, 4)
			id := put(t, te.s, "Subject: x\r\n\r\nbody\r\n", "a@x")
			fsys.taken.Store(taken)
			if !te.s.ready.reuse(id) {
				if taken < 3 {
					t.Fatal("the file was not kept after a taken name")
				}
				return
			}
			if taken >= 3 {
				t.Fatal("the file was kept although every name drawn was taken")
			}
			if _, err := os.Stat(filepath.Join(te.dir, dirBody, string(id)+extBody)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the delivered message's name is still there: %v", err)
			}
			var reuse []string
			for _, name := range files(t, te.dir, dirBody) {
				if filepath.Ext(name) == extReuse {
					reuse = append(reuse, name)
				}
			}
			if len(reuse) != 1 {
				t.Errorf("body/ holds %v, want one kept file", reuse)
			}
		})
	}
}
