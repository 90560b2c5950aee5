//go:build profile

package main

import (
	"os"
	"runtime/pprof"
	"strconv"
	"time"
)

// Built with -tags profile, sealpost writes a CPU profile of its first
// $SEALPOST_CPUPROFILE_SECONDS seconds to $SEALPOST_CPUPROFILE: how the
// README's profile findings are produced (bench/profile.sh).
func init() {
	path := os.Getenv("SEALPOST_CPUPROFILE")
	if path == "" {
		return
	}
	seconds, err := strconv.Atoi(os.Getenv("SEALPOST_CPUPROFILE_SECONDS"))
	if err != nil || seconds <= 0 {
		seconds = 30
	}
	f, err := os.Create(path)
	if err != nil {
		return
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return
	}
	go func() {
		time.Sleep(time.Duration(seconds) * time.Second)
		pprof.StopCPUProfile()
		f.Close()
	}()
}
