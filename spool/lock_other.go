//go:build !unix || solaris || aix

package spool

import (
	"fmt"
	"os"
)

func lockDir(path string) (*os.File, error) {
	return nil, fmt.Errorf("spool: locking %s: not supported on this platform", path)
}
