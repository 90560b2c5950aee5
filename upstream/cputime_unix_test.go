//go:build unix

package upstream_test

import (
	"syscall"
	"time"
)

// processCPU is the CPU time (user and system) the test process has used;
// the benchmarks report it per message, since CPU is what limits the
// relay's throughput and wall time on a shared machine is noisy.
func processCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
