//go:build unix

package spool

import (
	"io/fs"
	"os"
	"syscall"
)

// Rename is rename(2) alone. os.Rename first stats the new name, a second
// system call for each rename, so as to refuse any rename onto a
// directory; the spool renames regular files only, and rename(2) refuses
// a file onto a directory itself (EISDIR).
func (osFS) Rename(oldpath, newpath string) error {
	for {
		err := syscall.Rename(oldpath, newpath)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
		}
		return nil
	}
}

func openDir(name string) (*os.File, error) {
	return openRegular(name, os.O_RDONLY|syscall.O_DIRECTORY, 0)
}

// openRegular opens a file without registering it with the runtime's
// network poller, which os.OpenFile attempts (and fails) for every
// regular file at the cost of five extra system calls.
func openRegular(name string, flag int, perm uint32) (*os.File, error) {
	for {
		fd, err := syscall.Open(name, flag|syscall.O_CLOEXEC, perm)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			op := "open"
			if flag&os.O_CREATE != 0 {
				op = "create"
			}
			return nil, &fs.PathError{Op: op, Path: name, Err: err}
		}
		// A blocking descriptor: os.NewFile leaves it out of the poller.
		return os.NewFile(uintptr(fd), name), nil
	}
}

// readFile reads a whole file with the fewest system calls: metadata files
// are small and `queue list` and recovery read one per message. It uses
// the descriptor directly, without an *os.File (whose setup costs an fcntl
// and a cleanup registration), and trusts a short read of a regular file
// to mean its end, so that a file of up to 4 KiB is an open, one read and
// a close.
func readFile(name string) ([]byte, error) {
	fd, err := openForReading(name)
	if err != nil {
		return nil, err
	}
	defer syscall.Close(fd)
	data := make([]byte, 0, 4096)
	for {
		if len(data) == cap(data) {
			data = append(data, 0)[:len(data)]
		}
		want := cap(data) - len(data)
		n, err := syscall.Read(fd, data[len(data):cap(data)])
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return nil, &fs.PathError{Op: "read", Path: name, Err: err}
		}
		data = data[:len(data)+n]
		if n == 0 || n < want {
			return data, nil
		}
	}
}

// readTail reads the last len(buf) bytes of a file (all of it when it is
// smaller) into buf and returns them with the file's size: an open, an
// fstat, one pread and a close.
func readTail(name string, buf []byte) ([]byte, int64, error) {
	fd, err := openForReading(name)
	if err != nil {
		return nil, 0, err
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, 0, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	size := st.Size
	n := min(int64(len(buf)), size)
	tail := buf[:n]
	for got := int64(0); got < n; {
		k, err := syscall.Pread(fd, tail[got:], size-n+got)
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return nil, 0, &fs.PathError{Op: "read", Path: name, Err: err}
		case k == 0:
			// Cut short since the fstat: what there is.
			return tail[:got], size - n + got, nil
		}
		got += int64(k)
	}
	return tail, size, nil
}

// openForReading opens name read-only as a bare descriptor.
func openForReading(name string) (int, error) {
	for {
		fd, err := syscall.Open(name, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err == nil {
			return fd, nil
		}
		if err != syscall.EINTR {
			return -1, &fs.PathError{Op: "open", Path: name, Err: err}
		}
	}
}
