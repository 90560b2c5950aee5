// Package spool is sealpost's durable queue on disk.
//
// A message is acknowledged to the submitting client (SMTP 250) only after
// [Spool.Put] has returned, so Put makes the message survive a power cut
// before it returns. From then on the message is delivered at least once or,
// after [Options.MaxAge], given up and kept in failed/. A half-written
// message is never delivered.
//
// # Layout
//
// Everything lives under one directory (created 0700):
//
//	lock              flock(2)ed by the one process that owns the spool
//	tmp/<id>.json     metadata being rewritten; anything in tmp/ at Open is a crash leftover and removed
//	body/<id>.eml     the message body, written once, never rewritten; one
//	                  without metadata in queue/ is an interrupted Put, removed at Open
//	queue/<id>.json   the metadata ([Message]); its presence is the commit marker
//	failed/           given-up messages: <id>.json and <id>.eml, kept for the operator
//	corrupt/          quarantined files that could not be decoded, with their body if any
//
// IDs are "20261127T111500-abcdefghij": UTC creation time to the second and
// 50 random bits, so they sort by age, are safe as file names, and
// [ParseID] refuses anything else (no "../x" ever reaches a path).
//
// # Durability order of Put
//
//  1. write body/<id>.eml and fsync it (no temp name: without metadata it
//     is not a message, so a rename would buy nothing)
//  2. fsync body/ — before the commit marker exists, so that a crash can
//     never leave metadata whose body's directory entry was lost
//     (directories are independent on disk); a Put alone does this during
//     step 1's fsync instead
//  3. write queue/<id>.json under its final name — the commit marker —
//     and fsync it and queue/ together; only when both have finished is
//     the message durable, and Put returns
//
// No temp name and rename for the first metadata: that would cost another
// round of fsyncs for every message. Readers may see it before it is
// durable; metadata that is empty or cut short (incompleteMeta) reads as
// absent. A crash during step 3 can leave it so; such a message was never
// acknowledged, but damage looks the same, so Open quarantines it in
// corrupt/ with its body, like metadata that does not decode. Files are
// created exclusively, so no name clash overwrites another message. A
// Delete that finds the message before Put has returned is carried out
// when Put ends.
//
// A body without metadata is an interrupted Put and is removed at Open.
// After a delivery attempt that leaves recipients pending, the metadata is
// replaced atomically (tmp/, fsync, rename, fsync queue/). Directory fsyncs
// are shared between concurrent callers (group commit, see dirSyncer): a
// burst of Puts costs about two fsyncs per directory instead of one each,
// yet no Put returns before an fsync that started after it created its
// metadata has finished. The spool keeps its directories open for these
// fsyncs.
//
// A message delivered to every recipient is removed (metadata, then body)
// without an fsync: a crash that undoes the removal makes it be delivered
// again, which at-least-once allows; an operator's delete is fsynced. A
// message with failed recipients first has its final states made durable
// in queue/ and is then moved to failed/; Open completes a move that a
// crash interrupted.
//
// # Delivery
//
// [Spool.Run] runs one scheduler goroutine that keeps every queued message
// in a min-heap keyed by its next attempt time (loaded once at Open; Put
// adds to it) and hands due messages to a fixed pool of workers, each
// calling a [Deliverer]. A message is never with two workers at once.
// Errors are temporary unless they say otherwise (Temporary() == false):
// mail is never dropped on a guess.
package spool
