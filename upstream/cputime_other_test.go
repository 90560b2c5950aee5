//go:build !unix

package upstream_test

import "time"

func processCPU() (time.Duration, bool) { return 0, false }
