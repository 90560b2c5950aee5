package spool

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// Envelope is what the SMTP transaction said about a message, plus where it
// came from (for the audit log and `queue show`).
type Envelope struct {
	From     string // "" is the null sender
	To       []string
	SMTPUTF8 bool `json:",omitempty"`

	ClientAddr string    `json:",omitempty"` // remote address, or "unix" for the socket
	AuthUser   string    `json:",omitempty"` // SMTP AUTH identity
	LocalUser  string    `json:",omitempty"` // peer uid / user name on the unix socket
	MessageID  string    `json:",omitempty"` // Message-ID header value
	TLS        string    `json:",omitempty"` // e.g. "TLS1.3", "" for none
	Received   time.Time // when the relay accepted it; Put sets it if zero

	// Size is the message's size as delivered (Message.Size). It is not
	// stored twice: the spool fills it in when it hands the envelope to a
	// Deliverer, which passes it on as the SMTP SIZE parameter.
	Size int64 `json:"-"`
}

// RcptState is where one recipient stands.
type RcptState string

const (
	Pending   RcptState = "pending"
	Delivered RcptState = "delivered"
	Failed    RcptState = "failed"
)

// Rcpt is one recipient and its state.
type Rcpt struct {
	Addr      string
	State     RcptState
	LastReply string `json:",omitempty"` // the upstream's last word on it
}

// Message is the metadata of a queued message, stored as JSON at the end of
// its body file (trailer.go) and, once it has changed, in queue/<id>.json.
type Message struct {
	ID       ID
	Envelope Envelope
	Size     int64 // bytes as delivered: Header and the stored body
	// Header holds fields that go in front of the stored body when the
	// message is read: those only known once the whole body has streamed
	// past (DKIM-Signature) or naming the message (Received). Keeping them
	// here lets the body be written once, as it arrives.
	Header string `json:",omitempty"`
	// BodySum is the stored body's CRC-32C (see trailer.go), checked with
	// Size whenever the body is read; "" in messages queued by versions
	// before it, whose bodies are checked by length only.
	BodySum     string `json:",omitempty"`
	Rcpts       []Rcpt
	Attempts    int
	NextAttempt time.Time
	LastError   string `json:",omitempty"`
	Created     time.Time
}

// Pending returns the addresses still to be tried.
func (m *Message) Pending() []string {
	var to []string
	for _, r := range m.Rcpts {
		if r.State == Pending {
			to = append(to, r.Addr)
		}
	}
	return to
}

// ErrCorrupt is returned (wrapped) for metadata that cannot be decoded or
// does not make sense, and for a body that does not match its metadata.
var ErrCorrupt = errors.New("spool: corrupt message")

func encodeMessage(m *Message) ([]byte, error) {
	// Indented: operators read these files when something is stuck.
	b, err := json.MarshalIndent(m, "", "\t")
	if err != nil {
		return nil, fmt.Errorf("spool: encode metadata: %w", err)
	}
	return append(b, '\n'), nil
}

// incompleteMeta reports whether data is a metadata file whose first
// write a crash cut short: empty, or JSON that ends early (some file
// systems fill the unwritten rest with zeros). Anything else that does not
// decode is corruption, kept for an operator to look at.
func incompleteMeta(data []byte) bool {
	data = bytes.TrimRight(data, "\x00")
	if len(bytes.TrimSpace(data)) == 0 {
		return true
	}
	var v json.RawMessage
	err := json.NewDecoder(bytes.NewReader(data)).Decode(&v)
	return errors.Is(err, io.ErrUnexpectedEOF)
}

// decoder decodes and validates the metadata of the message want names.
type decoder func(data []byte, want ID) (*Message, error)

// decodeMessage decodes and validates metadata. want, if not empty, is the
// ID the file name promised: a file renamed by hand must not be mistaken
// for another message (its body would be wrong).
func decodeMessage(data []byte, want ID) (*Message, error) {
	var m Message
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if err := m.validate(want, len(m.Header)); err != nil {
		return nil, err
	}
	return &m, nil
}

// decodeListing is decodeMessage for a listing: the Header (the DKIM
// signature, most of the metadata) is skipped, not unquoted and copied.
// (`queue list` of 100,000: 1.56–1.76 s before, 1.42–1.51 s after.)
func decodeListing(data []byte, want ID) (*Message, error) {
	var listed struct {
		Message
		Header skippedString // shadows Message.Header
	}
	if err := json.Unmarshal(data, &listed); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if err := listed.Message.validate(want, listed.Header.len); err != nil {
		return nil, err
	}
	return &listed.Message, nil
}

// skippedString takes a JSON string (or null, as a string field does) and
// keeps only the length it decodes to, so that a listing refuses what
// decodeMessage refuses without unquoting and copying it.
type skippedString struct{ len int }

func (s *skippedString) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		return nil
	}
	n, ok := unquotedLen(data)
	if !ok {
		return errors.New("the Header is not a JSON string")
	}
	s.len = n
	return nil
}

// unquotedLen is the length in bytes of the string encoding/json decodes
// from the quoted JSON string q, which its scanner has already checked:
// escapes are well formed and there are no control characters. Like the
// decoder, it counts a byte that is not UTF-8, and a \u escape of a lone
// surrogate, as U+FFFD.
func unquotedLen(q []byte) (int, bool) {
	if len(q) < 2 || q[0] != '"' || q[len(q)-1] != '"' {
		return 0, false
	}
	s := q[1 : len(q)-1]
	n := 0
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\':
			if i+1 >= len(s) {
				return 0, false
			}
			if s[i+1] != 'u' {
				n++
				i += 2
				continue
			}
			r, ok := hex4(s[i+2:])
			if !ok {
				return 0, false
			}
			i += 6
			if utf16.IsSurrogate(r) {
				if len(s) >= i+6 && s[i] == '\\' && s[i+1] == 'u' {
					if r2, ok := hex4(s[i+2:]); ok {
						if pair := utf16.DecodeRune(r, r2); pair != utf8.RuneError {
							n += utf8.RuneLen(pair)
							i += 6
							continue
						}
					}
				}
				r = utf8.RuneError
			}
			n += utf8.RuneLen(r)
		case c < utf8.RuneSelf:
			n++
			i++
		default:
			r, size := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && size == 1 {
				n += utf8.RuneLen(utf8.RuneError)
			} else {
				n += size
			}
			i += size
		}
	}
	return n, true
}

// hex4 decodes the four hex digits at the start of b.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r*16 + rune(c)
	}
	return r, true
}

// validate checks decoded metadata; headerLen is the length of its Header.
func (m *Message) validate(want ID, headerLen int) error {
	if _, err := ParseID(string(m.ID)); err != nil {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if want != "" && m.ID != want {
		return fmt.Errorf("%w: id %q in file for %q", ErrCorrupt, m.ID, want)
	}
	if len(m.Rcpts) == 0 {
		return fmt.Errorf("%w: no recipients", ErrCorrupt)
	}
	for _, r := range m.Rcpts {
		switch r.State {
		case Pending, Delivered, Failed:
		default:
			return fmt.Errorf("%w: recipient %q has unknown state %q", ErrCorrupt, r.Addr, r.State)
		}
	}
	if m.Size < 0 || m.Attempts < 0 {
		return fmt.Errorf("%w: negative size or attempts", ErrCorrupt)
	}
	if m.Size < int64(headerLen) {
		return fmt.Errorf("%w: size %d is less than the header's %d bytes", ErrCorrupt, m.Size, headerLen)
	}
	return nil
}
