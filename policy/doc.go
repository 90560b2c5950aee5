// Package policy decides what a submission may do: which clients may
// connect and how many connections they may hold (conn.go); whether a
// message's line endings, header block and envelope addresses are sound
// (linecheck.go, header.go, headercheck.go, address.go); who may send and
// as which From domain (sender.go); and how fast each sender or client may
// go (limiter.go). It returns plain decisions — a *Violation naming the rule,
// or ok/retry-after — and knows nothing of SMTP sessions; relay maps each
// decision to the reply a client sees.
package policy
