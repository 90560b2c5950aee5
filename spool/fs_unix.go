//go:build unix

package spool

import (
	"io/fs"
	"os"
	"syscall"
)

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
	var fd int
	for {
		var err error
		fd, err = syscall.Open(name, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err == nil {
			break
		}
		if err != syscall.EINTR {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
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
