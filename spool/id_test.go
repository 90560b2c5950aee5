package spool

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func TestNewIDParses(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 27, 11, 15, 0, 0, time.FixedZone("X", 3600))
	seen := map[ID]bool{}
	for range 1000 {
		id := newID(now)
		if _, err := ParseID(string(id)); err != nil {
			t.Fatalf("newID produced %q which does not parse: %v", id, err)
		}
		if got, want := id.Time(), now.UTC().Truncate(time.Second); !got.Equal(want) {
			t.Fatalf("%q.Time() = %v, want %v", id, got, want)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
	if got := string(newID(now))[:16]; got != "20261127T101500-" {
		t.Errorf("id prefix %q, want UTC time", got)
	}
}

func TestIDsSortByTime(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var ids []ID
	for i := range 50 {
		ids = append(ids, newID(base.Add(time.Duration(49-i)*time.Second)))
	}
	slices.Sort(ids)
	for i := 1; i < len(ids); i++ {
		if !ids[i-1].Time().Before(ids[i].Time()) {
			t.Fatalf("sorted ids not in time order: %q before %q", ids[i-1], ids[i])
		}
	}
}

func TestParseID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in string
		ok bool
	}{
		{"20261127T111500-abcdefgh23", true},
		{"20261127T111500-zzzzzzzzzz", true},
		{"", false},
		{"../x", false},
		{"../../../../etc/passwd", false},
		{"20261127T111500-abcdefgh2", false},   // short
		{"20261127T111500-abcdefgh234", false}, // long
		{"20261127T111500-ABCDEFGH23", false},  // upper case
		{"20261127T111500-abcdefgh01", false},  // not base32
		{"20261127T111500_abcdefgh23", false},
		{"20261127X111500-abcdefgh23", false},
		{"20261327T111500-abcdefgh23", false}, // month 13
		{"20261127T251500-abcdefgh23", false}, // hour 25
		{"2026112+T111500-abcdefgh23", false},
		{"20261127T111500-abcd/fgh23", false},
		{"20261127T111500-abcd.fgh23", false},
		{"20261127T111500-abcd\x00fgh23", false},
		{"20261127T111500-abcdéfgh2", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			id, err := ParseID(tt.in)
			if tt.ok {
				if err != nil || string(id) != tt.in {
					t.Fatalf("ParseID(%q) = %q, %v; want ok", tt.in, id, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidID) {
				t.Fatalf("ParseID(%q) = %q, %v; want ErrInvalidID", tt.in, id, err)
			}
		})
	}
}
