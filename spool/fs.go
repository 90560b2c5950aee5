package spool

import (
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
	// OpenEmpty opens an existing file for writing and fails unless it
	// is empty: a body file made ready before its message.
	OpenEmpty(name string) (File, error)
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
	Remove(name string) error
	// SyncDir makes the directory's entries (renames, removals) durable.
	SyncDir(name string) error
}

// File is a file being written.
type File interface {
	io.Writer
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
func (osFS) OpenEmpty(name string) (File, error) {
	f, err := openRegular(name, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() || fi.Size() != 0 {
		f.Close()
		if err == nil {
			err = &fs.PathError{Op: "open", Path: name, Err: errors.New("not an empty regular file")}
		}
		return nil, err
	}
	return f, nil
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
func (osFS) Rename(oldpath, newpath string) error { return os.Rename(oldpath, newpath) }
func (osFS) Remove(name string) error             { return os.Remove(name) }
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
