//go:build !linux || arm

package spool

import "os"

// settle makes f's data durable: without sync_file_range(2) (or, on
// linux/arm, without it in package syscall), at the cost of a flush of
// its own.
func settle(f *os.File) error { return f.Sync() }
