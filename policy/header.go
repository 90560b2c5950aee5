package policy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// DefaultMaxHeaderBytes caps the header block when HeaderOptions leaves it 0.
// A megabyte is far more than any real header (a long References chain is a
// few kilobytes) yet small enough that a hostile client cannot make one
// message hold much memory before it is refused.
const DefaultMaxHeaderBytes = 1 << 20

// MaxLineOctets is RFC 5322 §2.1.1's limit on a line, excluding the CRLF.
const MaxLineOctets = 998

// HeaderOptions says how strictly ReadHeader reads.
type HeaderOptions struct {
	// SMTPUTF8 is true when the client gave MAIL FROM the SMTPUTF8 parameter.
	// Without it any byte >= 0x80 in the header is refused (RFC 6531 §3.1);
	// with it the header must be valid UTF-8 (RFC 6532).
	SMTPUTF8 bool
	// MaxHeaderBytes caps the header block including its ending empty line.
	// 0 or less means DefaultMaxHeaderBytes.
	MaxHeaderBytes int
}

// Field is one header field as it arrived.
type Field struct {
	// Name is the field name exactly as written (case preserved).
	Name string
	// Raw is the whole field: "Name: value\r\n" including any continuation
	// lines, byte for byte, so the message can be written back unchanged.
	// Callers must not modify it.
	Raw []byte
	// Line is the 1-based line number of the field's first line in the
	// message, or 0 for a field added with Add or Prepend.
	Line int
}

// Value returns the field's value unfolded (each CRLF that precedes a space
// or tab removed, RFC 5322 §2.2.3) with leading and trailing spaces and tabs
// trimmed. Encoded words are not decoded.
func (f Field) Value() string {
	v := f.Raw
	if i := bytes.IndexByte(v, ':'); i >= 0 {
		v = v[i+1:]
	}
	v = bytes.TrimSuffix(v, crlf)
	if bytes.Contains(v, crlf) {
		v = bytes.ReplaceAll(v, crlf, nil)
	}
	return string(bytes.Trim(v, " \t"))
}

// Header is a message's header block: its fields in order.
type Header struct {
	Fields []Field
}

var crlf = []byte("\r\n")

// ReadHeader reads the header block from r, up to and including the empty
// line that ends it, and leaves r at the first byte of the body. A message
// that ends (EOF) after a complete field line has no body and is valid; an
// empty input gives an empty Header (CheckHeader then refuses it for having
// no From).
//
// Any rule broken is returned as a *Violation naming the line; other errors
// are r's read errors, wrapped. The input is expected to have passed through
// NewLineChecker, but ReadHeader checks line endings and NULs itself too, so
// it is safe on any input (the sendmail path, fuzzing).
func ReadHeader(r *bufio.Reader, opts HeaderOptions) (*Header, error) {
	limit := opts.MaxHeaderBytes
	if limit <= 0 {
		limit = DefaultMaxHeaderBytes
	}
	type fieldStart struct {
		offset, line int
		name         string
	}
	var (
		// The whole header, in one buffer that the fields' Raw slice: one
		// allocation (plus growth) instead of one per field. 2 KiB holds
		// most headers a program writes.
		buf    = make([]byte, 0, 2048)
		starts = make([]fieldStart, 0, 16)
		line   int
	)
	finish := func() *Header {
		h := &Header{Fields: make([]Field, len(starts))}
		for i, s := range starts {
			e := len(buf)
			if i+1 < len(starts) {
				e = starts[i+1].offset
			}
			// Cap the capacity so that appending to one field's Raw can
			// never write over the next one.
			h.Fields[i] = Field{Name: s.name, Raw: buf[s.offset:e:e], Line: s.line}
		}
		return h
	}
	for {
		line++
		start := len(buf)
		var err error
		buf, err = readLine(r, buf, line)
		if err != nil {
			return nil, err
		}
		l := buf[start:]
		if len(l) == 0 {
			return finish(), nil // EOF at a line boundary
		}
		if len(buf) > limit {
			return nil, &Violation{Rule: RuleHeaderTooBig, Line: line,
				Msg: fmt.Sprintf("header is bigger than %d bytes", limit)}
		}
		if v := checkLine(l, line, opts.SMTPUTF8); v != nil {
			return nil, v
		}
		content := l[:len(l)-2]
		if len(content) == 0 {
			buf = buf[:start] // the empty line ends the header; no field owns it
			return finish(), nil
		}
		if content[0] == ' ' || content[0] == '\t' {
			if len(starts) == 0 {
				return nil, &Violation{Rule: RuleHeaderContinuationFirst, Line: line,
					Msg: "header starts with a continuation line"}
			}
			// Some parsers take a line of only white space for the end of
			// the header; anything after it would be a body to them and
			// a header to others. Refuse the ambiguity.
			if len(bytes.Trim(content, " \t")) == 0 {
				return nil, &Violation{Rule: RuleHeaderSyntax, Line: line,
					Msg: "header continuation line holds only white space"}
			}
			continue
		}
		colon := bytes.IndexByte(content, ':')
		switch {
		case colon < 0:
			return nil, &Violation{Rule: RuleHeaderSyntax, Line: line,
				Msg: "header line is neither a field (Name: value) nor a continuation"}
		case colon == 0:
			return nil, &Violation{Rule: RuleHeaderSyntax, Line: line, Msg: "header field has an empty name"}
		}
		name := content[:colon]
		for _, c := range name {
			if c < 33 || c > 126 {
				return nil, &Violation{Rule: RuleHeaderSyntax, Line: line,
					Msg: "header field name has a character other than printable ASCII"}
			}
		}
		starts = append(starts, fieldStart{offset: start, line: line, name: string(name)})
	}
}

// readLine appends one line, with its terminator, to buf. At EOF it appends
// nothing (a clean end) or refuses a final line without CRLF. It stops
// reading a line once it is certainly too long, so a client cannot make it
// buffer an endless line.
func readLine(r *bufio.Reader, buf []byte, line int) ([]byte, error) {
	start := len(buf)
	for {
		chunk, err := r.ReadSlice('\n')
		buf = append(buf, chunk...)
		// 998 octets, CR, LF: anything longer without its LF is too long.
		if len(buf)-start > MaxLineOctets+2 {
			return nil, &Violation{Rule: RuleLineTooLong, Line: line,
				Msg: fmt.Sprintf("header line is longer than %d octets", MaxLineOctets)}
		}
		switch {
		case err == nil:
			return buf, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF:
			if len(buf) == start {
				return buf, nil
			}
			return nil, &Violation{Rule: RuleHeaderSyntax, Line: line,
				Msg: "header ends in the middle of a line (no CRLF)"}
		default:
			return nil, fmt.Errorf("reading message header line %d: %w", line, err)
		}
	}
}

// checkLine checks one whole line l (ending in LF) for what any header line
// must satisfy: CRLF ending, no other CR, no NUL, the length limit, and the
// 8-bit rule.
func checkLine(l []byte, line int, smtputf8 bool) *Violation {
	if len(l) < 2 || l[len(l)-2] != '\r' {
		return bareLF(line)
	}
	content := l[:len(l)-2]
	if bytes.IndexByte(content, '\r') >= 0 {
		return bareCR(line)
	}
	if bytes.IndexByte(content, 0) >= 0 {
		return &Violation{Rule: RuleNULByte, Line: line, Msg: "NUL byte in message header"}
	}
	if len(content) > MaxLineOctets {
		return &Violation{Rule: RuleLineTooLong, Line: line,
			Msg: fmt.Sprintf("header line is longer than %d octets", MaxLineOctets)}
	}
	if !smtputf8 {
		for _, c := range content {
			if c >= 0x80 {
				return &Violation{Rule: Rule8BitHeader, Line: line,
					Msg: "8-bit byte in header without SMTPUTF8"}
			}
		}
	} else if !utf8.Valid(content) {
		return &Violation{Rule: Rule8BitHeader, Line: line, Msg: "header is not valid UTF-8"}
	}
	return nil
}

// Get returns the unfolded value of the first field called name (compared
// without regard to case) and whether there was one.
func (h *Header) Get(name string) (string, bool) {
	for _, f := range h.Fields {
		if strings.EqualFold(f.Name, name) {
			return f.Value(), true
		}
	}
	return "", false
}

// Values returns the unfolded values of every field called name, in order.
func (h *Header) Values(name string) []string {
	var vs []string
	for _, f := range h.Fields {
		if strings.EqualFold(f.Name, name) {
			vs = append(vs, f.Value())
		}
	}
	return vs
}

// Has reports whether a field called name is present.
func (h *Header) Has(name string) bool {
	for _, f := range h.Fields {
		if strings.EqualFold(f.Name, name) {
			return true
		}
	}
	return false
}

// Del removes every field called name.
func (h *Header) Del(name string) {
	fs := h.Fields[:0]
	for _, f := range h.Fields {
		if !strings.EqualFold(f.Name, name) {
			fs = append(fs, f)
		}
	}
	clear(h.Fields[len(fs):]) // let the removed fields' bytes be collected
	h.Fields = fs
}

// Add appends a field "name: value", folded at white space to keep lines
// near 78 columns (RFC 5322 §2.1.1). Leading and trailing white space of
// value is dropped, and any CR, LF or NUL in it becomes a space, so a value
// built from client data can never start a new field. Add panics if name is
// not a valid field name: names come from the program, not from clients.
func (h *Header) Add(name, value string) {
	h.Fields = append(h.Fields, newField(name, value))
}

// Prepend inserts a field "name: value" before all others, as trace fields
// (Received) must be (RFC 5321 §4.4). It treats value as Add does.
func (h *Header) Prepend(name, value string) {
	h.Fields = append(h.Fields, Field{})
	copy(h.Fields[1:], h.Fields)
	h.Fields[0] = newField(name, value)
}

// WriteTo writes the fields, then the empty line that ends the header.
func (h *Header) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for _, f := range h.Fields {
		m, err := w.Write(f.Raw)
		n += int64(m)
		if err != nil {
			return n, fmt.Errorf("writing header field %s: %w", f.Name, err)
		}
	}
	m, err := w.Write(crlf)
	n += int64(m)
	if err != nil {
		return n, fmt.Errorf("writing end of header: %w", err)
	}
	return n, nil
}

// foldColumn is where Add prefers to fold (RFC 5322 §2.1.1 "SHOULD be no
// more than 78 characters").
const foldColumn = 78

func newField(name, value string) Field {
	if !validFieldName(name) {
		panic(fmt.Sprintf("policy: invalid header field name %q", name))
	}
	value = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == 0 {
			return ' '
		}
		return r
	}, value)
	value = strings.Trim(value, " \t")

	raw := make([]byte, 0, len(name)+len(value)+8)
	raw = append(raw, name...)
	raw = append(raw, ':')
	if value != "" {
		raw = append(raw, ' ')
	}
	col := len(raw)
	rest := value
	for col+len(rest) > foldColumn {
		i := foldPoint(rest, foldColumn-col)
		if i <= 0 {
			break // one word longer than a line: leave it long
		}
		raw = append(raw, rest[:i]...)
		raw = append(raw, crlf...)
		rest = rest[i:] // starts with the white space that marks a continuation
		col = 0
	}
	raw = append(raw, rest...)
	raw = append(raw, crlf...)
	return Field{Name: name, Raw: raw[:len(raw):len(raw)]}
}

// foldPoint returns where to fold s so that its first piece is at most
// width bytes, or, if no fold fits, the first possible fold after width; 0 if
// none. A fold goes before a space or tab that follows a non-blank byte, so
// no line is ever blank.
func foldPoint(s string, width int) int {
	best := 0
	for i := 1; i < len(s); i++ {
		if (s[i] == ' ' || s[i] == '\t') && s[i-1] != ' ' && s[i-1] != '\t' {
			if i > width && best > 0 {
				return best
			}
			best = i
			if i > width {
				return best
			}
		}
	}
	return best
}

func validFieldName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 33 || c > 126 || c == ':' {
			return false
		}
	}
	return true
}
