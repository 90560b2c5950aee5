//go:build !unix

package spool

import (
	"io/fs"
	"os"
)

func openDir(name string) (*os.File, error) { return os.Open(name) }

func openRegular(name string, flag int, perm uint32) (*os.File, error) {
	return os.OpenFile(name, flag, fs.FileMode(perm))
}

func readFile(name string) ([]byte, error) { return os.ReadFile(name) }
