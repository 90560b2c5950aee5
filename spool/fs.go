package spool

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"sync"
)

// FS is the file-system layer under the spool: the few operations that
// writing and committing a message need. The default is the operating
// system's; tests substitute one that fails on demand to show that no
// failure leaves a committed half message.
type FS interface {
	MkdirAll(path string, perm fs.FileMode) error
	// Create creates name for writing with mode 0600 and fails if it
	// exists: a message's files are new, and a name clash must never
	// overwrite another message.
	Create(name string) (File, error)
	// OpenReady opens a body file made ready before its message
	// (readyfiles.go) for writing from its start, and fails unless it is
	// one: empty, or a delivered message's file marked by Reuse. It
	// returns the file's size: what the new message does not overwrite
	// is cut off before its fsync.
	OpenReady(name string) (File, int64, error)
	// Reuse marks the file of a delivered message, if it has at most
	// maxSize bytes and ends in a whole footer, so that it is no longer
	// read as a message: a later one will fill it. It fails, marking
	// nothing, for any other file.
	Reuse(name string, maxSize int64) error
	// Settle writes the file's data to the device without flushing its
	// cache (the caller's next directory fsync does): on Linux with
	// sync_file_range(2), elsewhere (and on linux/arm, where package
	// syscall lacks it) with an fsync, which flushes too.
	Settle(name string) error
	Open(name string) (io.ReadCloser, error)
	ReadFile(name string) ([]byte, error)
	// ReadTail reads the last len(buf) bytes of a file (all of it when it
	// is smaller) into buf, and returns them and the file's size.
	ReadTail(name string, buf []byte) (tail []byte, size int64, err error)
	ReadDir(name string) ([]fs.DirEntry, error)
	// ReadDirNames returns the names in a directory, in no particular
	// order: cheaper than ReadDir for a queue of 100,000.
	ReadDirNames(name string) ([]string, error)
	Rename(oldpath, newpath string) error
	// RenameFresh renames to a name that must not exist yet (a fresh
	// ID's): if newpath exists it fails with an error wrapping
	// fs.ErrExist and leaves both files as they were.
	RenameFresh(oldpath, newpath string) error
	Remove(name string) error
	// SyncDir makes the directory's entries (renames, removals) durable.
	SyncDir(name string) error
}

// File is a file being written.
type File interface {
	io.Writer
	Truncate(size int64) error
	Sync() error
	Close() error
}

// OSFS returns the FS backed by the operating system.
func OSFS() FS { return osFS{} }

type osFS struct{}

func (osFS) MkdirAll(path string, perm fs.FileMode) error { return os.MkdirAll(path, perm) }

// Create and Open go through openRegular: every message costs a few of
// them, and os.OpenFile spends four fcntl calls and an epoll_ctl on each,
// trying to put a regular file in the network poller.
func (osFS) Create(name string) (File, error) {
	return openRegular(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
}
func (osFS) OpenReady(name string) (File, int64, error) {
	f, size, err := openFooter(name, os.O_RDWR)
	if err != nil {
		return nil, 0, err
	}
	if size != 0 && !f.endsIn(reusedMagic) {
		f.Close()
		return nil, 0, &fs.PathError{Op: "open", Path: name, Err: errors.New("not a file made ready for a message")}
	}
	return f.File, size, nil
}

func (osFS) Reuse(name string, maxSize int64) error {
	f, size, err := openFooter(name, os.O_RDWR)
	if err != nil {
		return err
	}
	defer f.Close()
	if size > maxSize || !f.endsIn(trailerMagic) {
		return &fs.PathError{Op: "reuse", Path: name, Err: errors.New("not a message's file of at most the size kept")}
	}
	if _, err := f.WriteAt([]byte(reusedMagic), size-int64(footerSize)); err != nil {
		return err
	}
	return f.Close()
}

func (osFS) Settle(name string) error {
	f, err := openRegular(name, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := settle(f); err != nil {
		return &fs.PathError{Op: "settle", Path: name, Err: err}
	}
	return f.Close()
}

// footedFile is an open regular file with its last footerSize bytes, if
// it has that many.
type footedFile struct {
	*os.File
	footer [footerSize]byte
	whole  bool
}

// endsIn reports whether the file ends in a whole footer with magic.
func (f *footedFile) endsIn(magic string) bool {
	return f.whole && bytes.HasPrefix(f.footer[:], []byte(magic))
}

func openFooter(name string, flag int) (footedFile, int64, error) {
	f, err := openRegular(name, flag, 0)
	if err != nil {
		return footedFile{}, 0, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = &fs.PathError{Op: "open", Path: name, Err: errors.New("not a regular file")}
	}
	if err != nil {
		f.Close()
		return footedFile{}, 0, err
	}
	size := fi.Size()
	ff := footedFile{File: f, whole: size >= int64(footerSize)}
	if ff.whole {
		if _, err := f.ReadAt(ff.footer[:], size-int64(footerSize)); err != nil {
			f.Close()
			return footedFile{}, 0, err
		}
	}
	return ff, size, nil
}
func (osFS) Open(name string) (io.ReadCloser, error) {
	return openRegular(name, os.O_RDONLY, 0)
}
func (osFS) ReadFile(name string) ([]byte, error) { return readFile(name) }
func (osFS) ReadTail(name string, buf []byte) ([]byte, int64, error) {
	return readTail(name, buf)
}
func (osFS) ReadDir(name string) ([]fs.DirEntry, error) { return os.ReadDir(name) }
func (osFS) ReadDirNames(name string) ([]string, error) {
	d, err := openDir(name)
	if err != nil {
		return nil, err
	}
	names, err := d.Readdirnames(-1)
	return names, errors.Join(err, d.Close())
}
func (osFS) RenameFresh(oldpath, newpath string) error { return renameFresh(oldpath, newpath) }
func (osFS) Remove(name string) error                  { return os.Remove(name) }
func (osFS) SyncDir(name string) error {
	d, err := openDir(name)
	if err != nil {
		return err
	}
	err = d.Sync()
	return errors.Join(err, d.Close())
}

// openDir opens a directory for fsync. dirSyncer keeps the handle for the
// spool's lifetime instead of opening the directory for every commit.
func (osFS) openDir(name string) (syncCloser, error) { return openDir(name) }

type syncCloser interface {
	Sync() error
	Close() error
}

// dirOpener is implemented by file systems whose directory handles may be
// kept open between syncs (the operating system's).
type dirOpener interface {
	openDir(name string) (syncCloser, error)
}

// dirSyncer shares directory fsyncs between concurrent callers (group
// commit). A caller must call sync after its rename; sync returns once a
// sync that started after the call has finished. A sync already running
// when the caller arrives may have started before its rename, so it does
// not count: the caller waits for the next one, which then also covers
// everyone else who arrived meanwhile. A burst of N committers therefore
// costs about two fsyncs, not N.
type dirSyncer struct {
	fs  FS
	dir string
	// handle is the directory kept open for its fsyncs, when fs allows it;
	// only the goroutine running a sync touches it.
	handle syncCloser

	mu       sync.Mutex
	cond     *sync.Cond
	started  uint64 // generation of the latest sync started; the first is 1
	finished uint64 // generation of the latest sync finished
	running  bool
	lastFail uint64 // generation of the latest failed sync, 0 if none
	failErr  error
	waiting  int // callers waiting for a sync to finish (tests observe it)
}

func newDirSyncer(fsys FS, dir string) *dirSyncer {
	d := &dirSyncer{fs: fsys, dir: dir}
	d.cond = sync.NewCond(&d.mu)
	return d
}

func (d *dirSyncer) sync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	need := d.started + 1 // the first sync to start from now on covers us
	for d.finished < need {
		if d.running {
			d.waiting++
			d.cond.Wait()
			d.waiting--
			continue
		}
		d.running = true
		d.started++
		gen := d.started
		d.mu.Unlock()
		err := d.syncDir()
		d.mu.Lock()
		d.running = false
		d.finished = gen
		if err != nil {
			d.lastFail, d.failErr = gen, err
		}
		d.cond.Broadcast()
	}
	// Conservative: if any sync since ours started failed, report it. After
	// a failed fsync the kernel may have dropped the dirty entries, so a
	// later success does not prove our rename reached the disk.
	if d.lastFail >= need {
		return d.failErr
	}
	return nil
}

func (d *dirSyncer) syncDir() error {
	opener, ok := d.fs.(dirOpener)
	if !ok {
		return d.fs.SyncDir(d.dir)
	}
	if d.handle == nil {
		h, err := opener.openDir(d.dir)
		if err != nil {
			return err
		}
		d.handle = h
	}
	return d.handle.Sync()
}

// close releases the kept directory handle; the spool calls it once no
// sync can run any more.
func (d *dirSyncer) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.handle == nil {
		return nil
	}
	err := d.handle.Close()
	d.handle = nil
	return err
}

// renameFresh renames to a name that must not exist, as maildir delivers:
// a hard link, which the kernel refuses over an existing name in the same
// step that makes it, then the removal of the old name. (renameat2's
// RENAME_NOREPLACE would do it in one call, but package syscall does not
// have it on every platform, and the spool imports the standard library
// only.) A crash between the two leaves one file under both names, each
// one the recovery removes: a .reuse name, or a marked ready file. A file
// system without hard links gets a check and a rename in two steps, which
// is enough within the one process that holds the spool's lock.
func renameFresh(oldpath, newpath string) error {
	err := os.Link(oldpath, newpath)
	switch {
	case err == nil:
		if err := os.Remove(oldpath); err != nil {
			// Undone, so that the caller's view (not renamed) holds.
			os.Remove(newpath)
			return err
		}
		return nil
	case errors.Is(err, fs.ErrExist):
		return err
	default:
		return renameIfAbsent(oldpath, newpath)
	}
}

// renameIfAbsent renames unless newpath exists, in two steps.
func renameIfAbsent(oldpath, newpath string) error {
	if _, err := os.Lstat(newpath); err == nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: fs.ErrExist}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return osFS{}.Rename(oldpath, newpath)
}

// openFile is an open file whose end can be read: an *os.File.
type openFile interface {
	io.ReaderAt
	Stat() (fs.FileInfo, error)
}

// fileTail reads the last len(buf) bytes of an open file (all of it when
// it is smaller) into buf, and returns them and the file's size; a file
// cut short since the Stat gives what there is.
func fileTail(f openFile, buf []byte) ([]byte, int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	size := fi.Size()
	n := min(int64(len(buf)), size)
	tail := buf[:n]
	k, err := f.ReadAt(tail, size-n)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, err
	}
	return tail[:k], size - n + int64(k), nil
}
