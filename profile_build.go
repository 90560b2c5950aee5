//go:build profile

package main

import (
	"os"
	"runtime/pprof"
	"strconv"
	"time"
)

// Built with -tags profile, sealpost writes a CPU profile of its first
// $SEALPOST_CPUPROFILE_SECONDS seconds to $SEALPOST_CPUPROFILE, and a heap
// profile to $SEALPOST_HEAPPROFILE every two seconds: how the README's
// profile findings are produced (SEALPOST_BUILD_TAGS=profile with the
// scripts in bench/).
func init() {
	if path := os.Getenv("SEALPOST_HEAPPROFILE"); path != "" {
		go func() {
			for {
				time.Sleep(2 * time.Second)
				if f, err := os.Create(path + ".tmp"); err == nil {
					pprof.Lookup("heap").WriteTo(f, 0)
					f.Close()
					os.Rename(path+".tmp", path)
				}
			}
		}()
	}
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
