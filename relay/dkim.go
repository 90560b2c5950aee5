package relay

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"sealpost/certs"
)

// DKIM signing of one message as it streams to the spool.
//
// go-msgauth's Signer hashes what is written to it in a goroutine of its
// own and yields the DKIM-Signature field on Close, so the message is never
// held in memory: the session writes every byte it stores through a
// signing, and prepends the fields Finish returns.

const (
	algoRSA     = "rsa-sha256"
	algoEd25519 = "ed25519-sha256"
)

// dkimKey is one loaded [[dkim.keys]] entry.
type dkimKey struct {
	Domain, Selector, KeyFile string
	Subdomains                bool
	Signer                    crypto.Signer
	Algo                      string // algoRSA or algoEd25519
}

// dkimKeys is the set of keys in force. It is immutable once built, so a
// SIGHUP reload can swap the whole set atomically under running sessions.
type dkimKeys struct {
	keys       []dkimKey
	expiration time.Duration
}

// loadDKIMKeys loads every configured key. Keys are ordered RSA first
// within the configuration order, so signatures come out RSA first.
func loadDKIMKeys(cfg DKIMConfig) (*dkimKeys, []string, error) {
	ks := &dkimKeys{expiration: time.Duration(cfg.Expiration)}
	type pair struct{ domain, selector string }
	seen := make(map[pair]int, len(cfg.Keys))
	for i, c := range cfg.Keys {
		entry := fmt.Sprintf("dkim.keys[%d]", i)
		domain := strings.ToLower(strings.TrimSuffix(c.Domain, "."))
		p := pair{domain, strings.ToLower(c.Selector)}
		if j, dup := seen[p]; dup {
			// Two keys cannot both match the one record at that name, so
			// one of the two signatures would always fail.
			return nil, nil, fmt.Errorf("%s: domain %s and selector %s repeat dkim.keys[%d]; each key needs its own selector", entry, domain, c.Selector, j)
		}
		seen[p] = i
		signer, err := certs.LoadDKIMKey(c.KeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("%s (%s, selector %s): %w", entry, domain, c.Selector, err)
		}
		algo, err := dkimAlgo(signer)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %s: %w", entry, c.KeyFile, err)
		}
		ks.keys = append(ks.keys, dkimKey{
			Domain: domain, Selector: c.Selector, KeyFile: c.KeyFile,
			Subdomains: c.Subdomains, Signer: signer, Algo: algo,
		})
	}
	slices.SortStableFunc(ks.keys, func(a, b dkimKey) int { return algoRank(a.Algo) - algoRank(b.Algo) })
	return ks, ks.warnings(), nil
}

func dkimAlgo(s crypto.Signer) (string, error) {
	switch s.Public().(type) {
	case *rsa.PublicKey:
		return algoRSA, nil
	case ed25519.PublicKey:
		return algoEd25519, nil
	default:
		return "", fmt.Errorf("%T is not an RSA or Ed25519 key", s.Public())
	}
}

// algoRank puts RSA first: verifiers that stop at the first signature they
// understand (and many cannot check Ed25519) then see the one they can.
func algoRank(algo string) int {
	if algo == algoRSA {
		return 0
	}
	return 1
}

func (k *dkimKeys) warnings() []string {
	var warns []string
	for _, d := range k.domains() {
		rsaKey := false
		for _, key := range k.keys {
			if key.Domain == d && key.Algo == algoRSA {
				rsaKey = true
			}
		}
		if !rsaKey {
			warns = append(warns, "Gmail and Outlook do not yet verify Ed25519 alone; add an RSA key for "+d+" (dual signing, RFC 8463)")
		}
	}
	return warns
}

// forDomain returns the keys that sign mail From domain: keys for exactly
// that domain and keys for a parent domain that allow subdomains.
func (k *dkimKeys) forDomain(domain string) []dkimKey {
	if k == nil {
		return nil
	}
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	var out []dkimKey
	for _, key := range k.keys {
		if key.Domain == domain || (key.Subdomains && strings.HasSuffix(domain, "."+key.Domain)) {
			out = append(out, key)
		}
	}
	return out
}

// domains returns the configured domains, sorted, each once.
func (k *dkimKeys) domains() []string {
	if k == nil {
		return nil
	}
	var ds []string
	for _, key := range k.keys {
		ds = append(ds, key.Domain)
	}
	slices.Sort(ds)
	return slices.Compact(ds)
}

// signedFields are the fields covered by every signature (RFC 6376 5.4.1's
// list plus the one-click unsubscribe pair, which Gmail wants signed).
// Fields the relay itself adds later (Received) are deliberately absent.
var signedFields = [...]string{
	"From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding",
	"In-Reply-To", "References", "List-Unsubscribe", "List-Unsubscribe-Post",
}

// oversigned reports the fields listed once more than they occur, so
// that a copy added after signing (a second From, a Subject where there was
// none) breaks the signature instead of riding on it (RFC 6376 8.15).
func oversigned(name string) bool {
	switch name {
	case "From", "To", "Cc", "Subject":
		return true
	}
	return false
}

// headerKeys builds h= for a message whose header holds presentFields.
func headerKeys(presentFields []string) []string {
	var counts [len(signedFields)]int
	for _, f := range presentFields {
		for i, name := range signedFields {
			if strings.EqualFold(f, name) {
				counts[i]++
				break
			}
		}
	}
	n := 0
	for i, name := range signedFields {
		if oversigned(name) {
			counts[i]++
		}
		n += counts[i]
	}
	keys := make([]string, 0, n)
	for i, name := range signedFields {
		for range counts[i] {
			keys = append(keys, name)
		}
	}
	return keys
}

// signing signs one message with every key that applies to its From
// domain. It is not safe for concurrent use; one session owns it.
type signing struct {
	signers []*dkim.Signer
	err     error
	done    bool
	// headerEnd tracks the CRLF CRLF that closes the header; state counts
	// the bytes of it matched so far (2 at the start: an empty header is
	// just CRLF). go-msgauth fails on a header that is never closed, which
	// a message without a body legitimately is.
	headerEnd bool
	state     int
}

// newSigning starts signing one message for fromDomain. It returns nil and
// no error when no key applies. presentFields are the header field names of
// the message as it will be stored (after the relay's edits); now sets the
// x= expiry when dkim.expiration is set.
func (k *dkimKeys) newSigning(fromDomain string, presentFields []string, now time.Time) (*signing, error) {
	keys := k.forDomain(fromDomain)
	if len(keys) == 0 {
		return nil, nil
	}
	hk := headerKeys(presentFields)
	var expiration time.Time
	if k.expiration > 0 {
		expiration = now.Add(k.expiration)
	}
	s := &signing{signers: make([]*dkim.Signer, 0, len(keys)), state: 2}
	for _, key := range keys {
		// Trap 4 in STYLE.md: go-msgauth defaults to simple canonicalisation
		// and to signing every field; both are set explicitly.
		signer, err := dkim.NewSigner(&dkim.SignOptions{
			Domain:                 key.Domain,
			Selector:               key.Selector,
			Signer:                 key.Signer,
			Hash:                   crypto.SHA256,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed,
			BodyCanonicalization:   dkim.CanonicalizationRelaxed,
			HeaderKeys:             hk,
			Expiration:             expiration,
		})
		if err != nil {
			s.Abort()
			return nil, fmt.Errorf("dkim: %s selector %s (%s): %w", key.Domain, key.Selector, key.KeyFile, err)
		}
		s.signers = append(s.signers, signer)
	}
	return s, nil
}

// Write feeds the exact bytes stored, header block and body, in order.
func (s *signing) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.done {
		return 0, errors.New("dkim: write after Finish")
	}
	if !s.headerEnd {
		s.scanHeader(p)
	}
	for _, signer := range s.signers {
		if _, err := signer.Write(p); err != nil {
			s.err = fmt.Errorf("dkim: %w", err)
			return 0, s.err
		}
	}
	return len(p), nil
}

func (s *signing) scanHeader(p []byte) {
	for _, c := range p {
		switch {
		case c == '\r' && (s.state == 0 || s.state == 2):
			s.state++
		case c == '\r':
			s.state = 1
		case c == '\n' && (s.state == 1 || s.state == 3):
			s.state++
		default:
			s.state = 0
		}
		if s.state == 4 {
			s.headerEnd = true
			return
		}
	}
}

// headerCloser completes an unterminated header, indexed by scan state.
var headerCloser = [...]string{0: "\r\n\r\n", 1: "\n\r\n", 2: "\r\n", 3: "\n"}

// Finish returns the DKIM-Signature fields, one per key, RSA first, each
// folded and ending in CRLF, ready to be placed above the header.
func (s *signing) Finish() ([]byte, error) {
	if s.done {
		return nil, errors.New("dkim: Finish called twice")
	}
	if s.err != nil {
		s.Abort()
		return nil, s.err
	}
	if !s.headerEnd {
		if _, err := s.Write([]byte(headerCloser[s.state])); err != nil {
			s.Abort()
			return nil, err
		}
	}
	s.done = true
	var firstErr error
	for _, signer := range s.signers {
		if err := signer.Close(); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("dkim: %w", err)
		}
	}
	if firstErr != nil {
		return nil, firstErr
	}
	var out bytes.Buffer
	for _, signer := range s.signers {
		field := signer.Signature()
		out.WriteString(field)
		if !strings.HasSuffix(field, "\r\n") {
			out.WriteString("\r\n")
		}
	}
	return out.Bytes(), nil
}

// Abort releases the signers' goroutines when the message will not be
// stored (client gone, size exceeded, spool error). Safe to call at any
// time, also after Finish.
func (s *signing) Abort() {
	if s == nil || s.done {
		return
	}
	s.done = true
	for _, signer := range s.signers {
		signer.Close()
	}
}
