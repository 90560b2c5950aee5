package spool

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ID names a queued message. It sorts by creation time and is safe to use
// as a file name; obtain one from outside the package only through ParseID.
type ID string

const (
	idTimeLayout = "20060102T150405"
	idRandLen    = 10
	idLen        = len(idTimeLayout) + 1 + idRandLen
)

// Lower case only, so IDs stay distinct on case-insensitive file systems.
var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// ErrInvalidID is returned (wrapped) for a string that is not a spool ID.
var ErrInvalidID = errors.New("spool: invalid message id")

func newID(now time.Time) ID {
	var b [7]byte // 56 bits, of which the first 50 are used
	// crypto/rand.Read never fails on supported platforms (it crashes the
	// program instead), so there is no error to handle.
	rand.Read(b[:])
	return ID(now.UTC().Format(idTimeLayout) + "-" + idEncoding.EncodeToString(b[:])[:idRandLen])
}

// ParseID checks that s is a well-formed ID. Anything that came from a
// user, a command line or a file name goes through here before it is used
// to build a path.
func ParseID(s string) (ID, error) {
	if len(s) != idLen || s[len(idTimeLayout)] != '-' {
		return "", fmt.Errorf("%w: %q", ErrInvalidID, s)
	}
	for i := 0; i < len(idTimeLayout); i++ {
		c := s[i]
		if i == 8 {
			if c != 'T' {
				return "", fmt.Errorf("%w: %q", ErrInvalidID, s)
			}
			continue
		}
		if c < '0' || c > '9' {
			return "", fmt.Errorf("%w: %q", ErrInvalidID, s)
		}
	}
	if _, err := time.Parse(idTimeLayout, s[:len(idTimeLayout)]); err != nil {
		return "", fmt.Errorf("%w: %q: bad time", ErrInvalidID, s)
	}
	for _, c := range s[len(idTimeLayout)+1:] {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return "", fmt.Errorf("%w: %q", ErrInvalidID, s)
		}
	}
	return ID(s), nil
}

// Time is the creation time encoded in the ID (UTC, whole seconds); the zero
// time if id is malformed.
func (id ID) Time() time.Time {
	if len(id) != idLen {
		return time.Time{}
	}
	t, err := time.Parse(idTimeLayout, string(id[:len(idTimeLayout)]))
	if err != nil {
		return time.Time{}
	}
	return t
}

// idFromName returns the ID of a file name "<id><ext>", or false.
func idFromName(name, ext string) (ID, bool) {
	base, ok := strings.CutSuffix(name, ext)
	if !ok {
		return "", false
	}
	id, err := ParseID(base)
	return id, err == nil
}
