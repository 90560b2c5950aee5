// Package policy decides what a submission may do: which clients may
// connect, how many connections they may hold, and (with the message checks)
// what a message may contain. It returns plain decisions and knows nothing
// of SMTP sessions; relay maps each decision to the reply a client sees.
package policy
