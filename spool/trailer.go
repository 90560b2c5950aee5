package spool

import (
	"encoding/binary"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
)

// A message's first metadata is written at the end of its body file, after
// the body: a Put then creates, writes and fsyncs one file and syncs one
// directory (none, in a file made ready ahead: readyfiles.go), instead of
// two of each. On a 2-core VM that halved the disk
// writes and flushes of a Put (12 writes and 4 flushes → 7 and 2, counted
// in /sys/block/*/stat) and its time. queue/<id>.json exists only once the
// metadata has changed (after a delivery attempt); it then takes
// precedence over the trailer, which is never rewritten.
//
//	body/<id>.eml = body | metadata JSON | footer
//	footer (16 bytes) = "SPMETA01" | JSON length (uint32, big-endian) | CRC-32C of the JSON (uint32, big-endian)
//
// The footer is written last and fsynced with the rest before the 250: a
// body file without a whole footer is a Put that never finished.
const (
	trailerMagic = "SPMETA01"
	footerSize   = len(trailerMagic) + 8
	// reusedMagic replaces trailerMagic in the footer of a delivered
	// message's file that is kept to hold a later message (Reuse in
	// readyfiles.go): from then on the file is no message, like an empty
	// file made ready.
	reusedMagic = "SPREUSE1"
	// maxTrailerJSON is far above any real metadata (thousands of
	// recipients); Put refuses more, and a bigger length is damage.
	maxTrailerJSON = 4 << 20
	// trailerReadAhead is read from the end of a body file at once: the
	// metadata of an ordinary message fits (1.3 KB with an RSA-2048
	// signature and one recipient; dual signing, RSA-4096 or a dozen
	// recipients stay under 4 KiB), so reading it costs one open and one
	// read.
	trailerReadAhead = 4 << 10
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendTrailer appends the metadata JSON and its footer to b.
func appendTrailer(b, metaJSON []byte) []byte {
	b = append(b, metaJSON...)
	b = append(b, trailerMagic...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(metaJSON)))
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(metaJSON, castagnoli))
}

// trailerState is what the end of a body file says.
type trailerState int

const (
	trailerOK      trailerState = iota
	trailerAbsent               // no footer: a Put still writing, or cut short by a crash
	trailerDamaged              // a footer whose JSON does not match it: damage, or a crash while a trailer spanning blocks was written
	trailerReady                // a delivered message's file kept for a later one: no message
)

// parseTrailer finds the metadata JSON at the end of a body file of size
// bytes, of which tail holds the last len(tail). need > 0 asks for that
// many bytes from the end before it can tell.
func parseTrailer(tail []byte, size int64) (metaJSON []byte, state trailerState, need int64) {
	if len(tail) < footerSize {
		return nil, trailerAbsent, 0
	}
	switch string(tail[len(tail)-footerSize : len(tail)-8]) {
	case trailerMagic:
	case reusedMagic:
		return nil, trailerReady, 0
	default:
		return nil, trailerAbsent, 0
	}
	footer := tail[len(tail)-8:]
	n := int64(binary.BigEndian.Uint32(footer[:4]))
	if n > maxTrailerJSON || n+int64(footerSize) > size {
		return nil, trailerDamaged, 0
	}
	if n+int64(footerSize) > int64(len(tail)) {
		return nil, trailerOK, n + int64(footerSize)
	}
	metaJSON = tail[len(tail)-footerSize-int(n) : len(tail)-footerSize]
	if crc32.Checksum(metaJSON, castagnoli) != binary.BigEndian.Uint32(footer[4:]) {
		return nil, trailerDamaged, 0
	}
	return metaJSON, trailerOK, 0
}

// readTrailer reads the metadata JSON at the end of the body file name,
// into buf (trailerReadAhead bytes) if it fits: the result may be in buf.
// It also returns the file's size.
func readTrailer(fsys FS, name string, buf []byte) ([]byte, trailerState, int64, error) {
	return readTrailerVia(func(b []byte) ([]byte, int64, error) { return fsys.ReadTail(name, b) }, buf)
}

// readTrailerVia is readTrailer through readTail, which reads the last
// len(b) bytes of the file and returns them and its size.
func readTrailerVia(readTail func(b []byte) ([]byte, int64, error), buf []byte) ([]byte, trailerState, int64, error) {
	tail, size, err := readTail(buf)
	if err != nil {
		return nil, 0, 0, err
	}
	data, state, need := parseTrailer(tail, size)
	if need > 0 {
		if tail, size, err = readTail(make([]byte, need)); err != nil {
			return nil, 0, 0, err
		}
		if data, state, need = parseTrailer(tail, size); need > 0 {
			// Shorter than a moment ago: a message's file does not
			// change while it is queued (only once delivered, to be
			// reused), so this is not ours to trust.
			return nil, trailerDamaged, size, nil
		}
	}
	return data, state, size, nil
}

// bodySum is the CRC-32C of a stored body, recorded in its metadata as
// "crc32c:" and eight hex digits. The trailer is fsynced with the body,
// but a crash before that fsync has finished can leave a whole trailer
// after a body that is not (blocks reach the disk in any order); such a
// message was never acknowledged, and the sum tells it from the one that
// was, when it is read for delivery.
type bodySum struct{ hash.Hash32 }

const bodySumPrefix = "crc32c:"

func newBodySum() bodySum { return bodySum{crc32.New(castagnoli)} }

func (b bodySum) String() string { return fmt.Sprintf("%s%08x", bodySumPrefix, b.Sum32()) }

// verifiedBody reads the body part of a body file (without its trailer)
// and checks it against its metadata: its length and, when the metadata
// records one, its sum (messages queued by versions before it have none).
// The read that would complete the body returns its bytes only once the
// whole body has checked; otherwise it returns no bytes and an error
// wrapping ErrCorrupt (ErrNotFound for a Lookup reader whose file was
// reused for a later message meanwhile). So a deliverer never has the
// whole of a damaged body, whether it reads to io.EOF or counts Size
// bytes, and ends up aborting rather than ending the data.
type verifiedBody struct {
	f       io.ReadCloser
	r       io.Reader // f limited to the body's length
	id      ID
	want    int64
	wantSum string
	sum     bodySum
	n       int64
	checked bool
	err     error // the mismatch, once found
	// openSize is the file's size when it was opened, for a reader that
	// may race the message's delivery (-1 for a delivery's own, whose
	// file cannot be reused meanwhile): see reused.
	openSize int64
}

func newVerifiedBody(f io.ReadCloser, m *Message, openSize int64) *verifiedBody {
	want := m.Size - int64(len(m.Header))
	return &verifiedBody{f: f, r: io.LimitReader(f, want), id: m.ID, want: want, wantSum: m.BodySum, sum: newBodySum(), openSize: openSize}
}

func (v *verifiedBody) mismatch(what string) error {
	if v.reused() {
		return fmt.Errorf("%w: %s was delivered while it was being read", ErrNotFound, v.id)
	}
	return fmt.Errorf("%w: body of %s does not match its metadata (%s): a submission interrupted by a crash before it was acknowledged, or damage", ErrCorrupt, v.id, what)
}

func (v *verifiedBody) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	v.n += int64(n)
	v.sum.Write(p[:n])
	switch {
	case v.n == v.want && !v.checked:
		v.checked = true
		if v.wantSum != "" && v.sum.String() != v.wantSum {
			v.err = v.mismatch(fmt.Sprintf("checksum %s, %s recorded", v.sum.String(), v.wantSum))
			return 0, v.err
		}
	case err == io.EOF && v.n < v.want:
		v.err = v.mismatch(fmt.Sprintf("%d bytes, %d recorded", v.n, v.want))
		return 0, v.err
	}
	return n, err
}

// reused reports whether the open file was reused for a later message
// since it was opened (the message delivered meanwhile), as only reuse
// changes a file: it now ends in the reuse mark or in another message's
// trailer, or, while the later message's Put is still writing it, in no
// whole trailer at a size other than the one it was opened at. Damage
// forges no trailer (its checksum) and changes no size, and a message
// deleted, failed or quarantined meanwhile keeps its file as it was, so
// anything else is damage.
func (v *verifiedBody) reused() bool {
	f, ok := v.f.(openFile)
	if !ok {
		return false
	}
	metaJSON, state, size, err := readTrailerVia(func(b []byte) ([]byte, int64, error) { return fileTail(f, b) }, make([]byte, trailerReadAhead))
	if err != nil {
		return false
	}
	switch state {
	case trailerReady:
		return true
	case trailerOK:
		m, err := decodeListing(metaJSON, "")
		return err == nil && m.ID != v.id
	}
	return v.openSize >= 0 && size != v.openSize
}

// corrupt is the mismatch found so far, if any.
func (v *verifiedBody) corrupt() error { return v.err }

func (v *verifiedBody) Close() error { return v.f.Close() }
