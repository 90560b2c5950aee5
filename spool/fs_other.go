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

func readTail(name string, buf []byte) ([]byte, int64, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	return fileTail(f, buf)
}

func (osFS) Rename(oldpath, newpath string) error { return os.Rename(oldpath, newpath) }
