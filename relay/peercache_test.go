package relay

import (
	"errors"
	"os"
	"os/user"
	"strconv"
	"testing"
	"time"

	"sealpost/internal/fakeclock"
)

// fakeNames is a passwd database that counts how often it is asked.
type fakeNames struct {
	names map[int]string
	err   error
	calls int
}

func (f *fakeNames) lookup(uid int) (string, error) {
	f.calls++
	if f.err != nil {
		return "", f.err
	}
	return f.names[uid], nil
}

func newFakeUserNames(db *fakeNames, clock *fakeclock.Clock) *userNames {
	n := newUserNames(db.lookup)
	n.now = clock.Now
	return n
}

// TestUserNamesReusedUntilTTL: a uid's name is looked up once for a burst
// of connections, and again once userNameTTL has passed, so a renamed
// account shows under its new name.
func TestUserNamesReusedUntilTTL(t *testing.T) {
	t.Parallel()
	db := &fakeNames{names: map[int]string{1000: "alice"}}
	clock := fakeclock.New(time.Unix(1_700_000_000, 0))
	n := newFakeUserNames(db, clock)
	for range 5 {
		if got := n.name(1000); got != "alice" {
			t.Fatalf("name(1000) = %q", got)
		}
	}
	if db.calls != 1 {
		t.Errorf("5 lookups of one uid asked the passwd database %d times, want 1", db.calls)
	}

	db.names[1000] = "alice2" // renamed
	clock.Advance(userNameTTL - time.Second)
	if got := n.name(1000); got != "alice" {
		t.Errorf("within the TTL: %q, want the kept name", got)
	}
	clock.Advance(time.Second)
	if got := n.name(1000); got != "alice2" {
		t.Errorf("after the TTL: %q, want the new name", got)
	}
	if db.calls != 2 {
		t.Errorf("passwd database asked %d times, want 2", db.calls)
	}
}

// TestUserNamesUnknownAndFailures: a uid without a passwd entry is
// remembered as nameless like any other answer, but a failed lookup is
// not an answer and is asked again next time.
func TestUserNamesUnknownAndFailures(t *testing.T) {
	t.Parallel()
	db := &fakeNames{names: map[int]string{}}
	clock := fakeclock.New(time.Unix(1_700_000_000, 0))
	n := newFakeUserNames(db, clock)
	if got := n.name(4321); got != "" {
		t.Errorf("name of a uid with no entry = %q", got)
	}
	n.name(4321)
	if db.calls != 1 {
		t.Errorf("a uid with no entry was looked up %d times, want 1", db.calls)
	}

	db.err = errors.New("passwd unreadable")
	if got := n.name(1000); got != "" {
		t.Errorf("name on a failed lookup = %q", got)
	}
	db.err = nil
	db.names[1000] = "alice"
	if got := n.name(1000); got != "alice" {
		t.Errorf("after a failed lookup: %q, want it asked again", got)
	}
}

// TestUserNamesBounded: connections from ever new uids never grow the
// cache past its bound, and every answer stays right.
func TestUserNamesBounded(t *testing.T) {
	t.Parallel()
	db := &fakeNames{names: map[int]string{}}
	for uid := range 1000 {
		db.names[uid] = "u" + strconv.Itoa(uid)
	}
	clock := fakeclock.New(time.Unix(1_700_000_000, 0))
	n := newFakeUserNames(db, clock)
	n.max = 16
	for i := range 3000 {
		uid := (i * 7) % 1000
		if got, want := n.name(uid), db.names[uid]; got != want {
			t.Fatalf("name(%d) = %q, want %q", uid, got, want)
		}
		if len(n.byUID) > n.max {
			t.Fatalf("after %d lookups the cache holds %d names, bound %d", i+1, len(n.byUID), n.max)
		}
		if i%100 == 0 {
			clock.Advance(userNameTTL / 3) // some entries expire on the way
		}
	}
}

// TestLookupUserName: the real lookup tells a uid without an entry (no
// name, no error) from one with a name.
func TestLookupUserName(t *testing.T) {
	t.Parallel()
	me, err := user.Current()
	if err != nil {
		t.Skipf("no current user: %v", err)
	}
	if got, err := lookupUserName(os.Getuid()); err != nil || got != me.Username {
		t.Errorf("lookupUserName(own uid) = %q, %v; want %q", got, err, me.Username)
	}
	const unlikely = 2_000_000_017
	if _, err := user.LookupId(strconv.Itoa(unlikely)); err == nil {
		t.Skip("uid 2000000017 exists here")
	}
	if got, err := lookupUserName(unlikely); err != nil || got != "" {
		t.Errorf("lookupUserName(no such uid) = %q, %v; want \"\", nil", got, err)
	}
}

// BenchmarkUserName is the per-connection cost of naming a sender's uid,
// with the cache and (for comparison) reading the passwd database.
func BenchmarkUserName(b *testing.B) {
	uid := os.Getuid() + 1 // not the current user, which os/user keeps
	b.Run("cached", func(b *testing.B) {
		n := newUserNames(lookupUserName)
		b.ReportAllocs()
		for range b.N {
			n.name(uid)
		}
	})
	b.Run("lookup", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			lookupUserName(uid)
		}
	})
}
