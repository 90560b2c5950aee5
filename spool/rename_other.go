//go:build !linux

package spool

// renameFresh checks, then renames: without renameat2(2) the two are
// separate steps, which is enough within one process (the spool's lock
// keeps others out, and fresh names are random).
func renameFresh(oldpath, newpath string) error { return renameIfAbsent(oldpath, newpath) }
