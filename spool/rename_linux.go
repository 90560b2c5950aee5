//go:build linux

package spool

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// renameFresh renames with renameat2(2)'s RENAME_NOREPLACE: the kernel
// checks and renames in one step. A file system without the flag (NFS,
// some FUSE ones) answers EINVAL and gets the check and the rename as two
// steps, after that failed call each time: a spool there is rare, and
// remembering would be state shared by every spool of the process.
func renameFresh(oldpath, newpath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	for err == unix.EINTR {
		err = unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		return renameIfAbsent(oldpath, newpath)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	return nil
}
