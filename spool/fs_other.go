//go:build !unix

package spool

import (
	"errors"
	"io"
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
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	size := fi.Size()
	n := min(int64(len(buf)), size)
	tail := buf[:n]
	k, err := f.ReadAt(tail, size-n)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, err
	}
	// Cut short since the Stat: what there is.
	return tail[:k], size - n + int64(k), nil
}

func (osFS) Rename(oldpath, newpath string) error { return os.Rename(oldpath, newpath) }
