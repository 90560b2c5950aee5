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
//	body/<id>.eml     the message body, followed by its first metadata and a
//	                  footer (the trailer, see trailer.go); written once,
//	                  never rewritten while the message is queued. Its whole
//	                  footer is the commit marker: one without it is an
//	                  interrupted Put, removed when its first attempt reads
//	                  it. Also the files made ready for messages to come:
//	                  empty, or a delivered message's with its footer marked
//	                  as reused (readyfiles.go)
//	queue/<id>.json   the metadata ([Message]) once it has changed (after a
//	                  delivery attempt, or by versions before the trailer,
//	                  from the start); when present it wins over the trailer
//	failed/           given-up messages: <id>.json and <id>.eml, kept for the operator
//	corrupt/          quarantined files: metadata that could not be decoded, bodies
//	                  that do not match their metadata, with the other file if any
//
// IDs are "20261127T111500-abcdefghij": UTC creation time to the second
// (of the message's file, which a ready file has up to 30 s early) and
// 50 random bits, so they sort by age, are safe as file names, and
// [ParseID] refuses anything else (no "../x" ever reaches a path).
//
// # Durability of Put
//
//  1. create body/<id>.eml (exclusively, under its final name: without its
//     trailer it is not a message, so a temp name and a rename would buy
//     nothing) and write the body, computing its length and CRC-32C
//  2. start the fsync of body/ in the background, while the fields that
//     need the whole body (the DKIM signature) are computed
//  3. append the metadata (with those fields, the length and the sum) and
//     the footer, and fsync the file
//  4. once that fsync and body/'s have finished, the message is durable
//     and Put returns
//
// One file and one directory per message: a Put costs one file fsync and a
// share of one directory fsync. With Options.ReadyFiles (the relay's
// setting), step 1 is done ahead: NewID names an empty file created and
// made durable with others in one fsync of body/ (readyfiles.go), step 2
// is skipped, and the Put costs the file's fsync alone. The ready file may
// be a delivered message's, kept rather than removed: the Put overwrites
// it from the start and cuts off what is left before the fsync.
//
// Readers may see the trailer before it is durable. A crash before step 4
// has finished can leave the footer cut short or missing (the file is then
// an interrupted Put, removed at the first attempt after Open, which loads
// such files by name without reading them, so that a restart does not read
// the whole queue once more; the newest few, where a crash leaves its
// unused ready files, it does read and clear; in a reused file, the old
// marked footer at its end says the same until it is cut off), or whole
// after a body whose blocks did not all reach the disk: the recorded length and sum tell that when the body
// is read, and such a message, never acknowledged, is quarantined in
// corrupt/ before a deliverer could end its data (verifiedBody). A footer
// whose metadata fails its checksum is damage and is quarantined too. A
// Delete that finds the message before Put has returned is carried out
// when Put ends.
//
// After a delivery attempt that leaves recipients pending, the metadata is
// written to queue/ atomically (tmp/, fsync, rename, fsync queue/); from
// then on that file counts. Directory fsyncs are shared between concurrent
// callers (group commit, see dirSyncer): a burst of Puts costs about two
// fsyncs of body/ instead of one each, yet no Put returns before an fsync
// that started after it created its file has finished. The spool keeps its
// directories open for these fsyncs.
//
// A message delivered to every recipient is removed (its body file, then
// its metadata file if any, so that a crash in between leaves metadata
// without a body, which Open quarantines, rather than the first metadata
// with every recipient pending) without an fsync: a crash that undoes the
// whole removal makes it be delivered again, which at-least-once allows;
// an operator's delete is fsynced. A Delete during a Put waits for the Put
// if the trailer is written, and finds nothing before. A message with failed recipients first has
// its final states made durable in queue/ and is then moved to failed/;
// Open completes a move that a crash interrupted.
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
