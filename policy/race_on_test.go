//go:build race

package policy

// floodKeys is how many distinct keys TestLimiterMemoryBounded drives. The
// race detector makes each Allow about five times slower (a million keys
// took 4.3 s), so under -race the test drives 300,000: still three times
// MaxKeys, so the cap evicts for most of the run, and the full million runs
// without -race.
const floodKeys = 300_000
