//go:build !(linux && (amd64 || arm64 || riscv64 || loong64))

package spool

// startWriteback is a hint given where sync_file_range(2) takes its
// arguments in one plain layout (64-bit Linux); elsewhere the fsync does
// all the work.
func startWriteback(File) {}
