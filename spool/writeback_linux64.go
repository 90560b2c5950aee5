//go:build linux && (amd64 || arm64 || riscv64 || loong64)

package spool

import (
	"os"
	"syscall"
)

// syncFileRangeWrite is SYNC_FILE_RANGE_WRITE (linux/fs.h).
const syncFileRangeWrite = 2

// startWriteback asks the kernel to start writing f's data now, without
// waiting for it: the body then travels to the disk while its signature is
// computed, and the fsync after the trailer has less left to wait for. It
// is only a hint; the fsync reports any error.
func startWriteback(f File) {
	osf, ok := f.(*os.File)
	if !ok {
		return
	}
	syscall.Syscall6(syscall.SYS_SYNC_FILE_RANGE, osf.Fd(), 0, 0, syncFileRangeWrite, 0, 0)
}
