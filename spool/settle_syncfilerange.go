//go:build linux && !arm

package spool

import (
	"os"
	"syscall"
)

// settle writes f's dirty pages and waits for them, without a cache flush
// and without the inode: for a file whose blocks and size do not change
// (Reuse overwrites eight bytes in place), the device's next flush (the
// refill's fsync of body/ right after) makes them durable.
func settle(f *os.File) error {
	const how = 0x1 | 0x2 | 0x4 // SYNC_FILE_RANGE_WAIT_BEFORE | WRITE | WAIT_AFTER
	for {
		err := syscall.SyncFileRange(int(f.Fd()), 0, 0, how)
		if err != syscall.EINTR {
			return err
		}
	}
}
