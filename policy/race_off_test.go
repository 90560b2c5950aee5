//go:build !race

package policy

// floodKeys is how many distinct keys TestLimiterMemoryBounded drives: the
// million senders of issue 3.
const floodKeys = 1_000_000
