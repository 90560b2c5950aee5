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
