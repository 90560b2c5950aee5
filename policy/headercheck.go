package policy

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
)

// singletons are the fields a message may carry at most once: RFC 5322
// §3.6's table, plus the MIME fields whose duplication makes two readers
// see two different bodies. A second Subject or Bcc is the usual trace of a
// header injection through a form field.
var singletons = [...]string{
	"Date", "From", "Sender", "Reply-To", "To", "Cc", "Bcc",
	"Message-ID", "In-Reply-To", "References", "Subject",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding",
}

// addressFields are parsed as address lists.
var addressFields = [...]string{"From", "Sender", "Reply-To", "To", "Cc", "Bcc"}

// CheckHeader checks a header read by ReadHeader and returns the first
// broken rule in line order, or nil:
//   - a field from singletons appears twice ("duplicate-field");
//   - an address field does not parse as an address list ("address-list");
//     To and Cc may be an empty group ("undisclosed-recipients:;"), Bcc may
//     be empty, From must name at least one mailbox and Sender exactly one;
//   - a display name, or an encoded word anywhere, decodes to CR, LF, NUL
//     or (in a display name) something shaped like a second address
//     ("header-injection");
//   - there is no From field ("missing-from").
func CheckHeader(h *Header) *Violation {
	var seen [len(singletons)]bool
	hasFrom := false
	dec := newWordDecoder()
	for _, f := range h.Fields {
		if i := singletonIndex(f.Name); i >= 0 {
			if seen[i] {
				return &Violation{Rule: RuleDuplicateField, Line: f.Line,
					Msg: fmt.Sprintf("duplicate %s field (header injection?)", singletons[i])}
			}
			seen[i] = true
		}
		if name, ok := addressField(f.Name); ok {
			if name == "From" {
				hasFrom = true
			}
			if _, v := parseAddressField(name, f, dec); v != nil {
				return v
			}
			continue
		}
		if v := checkEncodedWords(f, dec); v != nil {
			return v
		}
	}
	if !hasFrom {
		return &Violation{Rule: RuleMissingFrom, Msg: "message has no From field"}
	}
	return nil
}

// FromAddresses returns the mailboxes of every From field (CheckHeader makes
// sure there is exactly one), for the sender rules. A missing or malformed
// From is returned as a *Violation.
func FromAddresses(h *Header) ([]*mail.Address, error) {
	var all []*mail.Address
	found := false
	for _, f := range h.Fields {
		if !strings.EqualFold(f.Name, "From") {
			continue
		}
		found = true
		as, v := parseAddressField("From", f, newWordDecoder())
		if v != nil {
			return nil, v
		}
		all = append(all, as...)
	}
	if !found {
		return nil, &Violation{Rule: RuleMissingFrom, Msg: "message has no From field"}
	}
	return all, nil
}

func singletonIndex(name string) int {
	for i, s := range singletons {
		if strings.EqualFold(name, s) {
			return i
		}
	}
	return -1
}

func addressField(name string) (string, bool) {
	for _, s := range addressFields {
		if strings.EqualFold(name, s) {
			return s, true
		}
	}
	return "", false
}

// newWordDecoder decodes RFC 2047 encoded words. An unknown charset is not
// an error: its bytes are passed through undecoded, because refusing a
// message for a display name in an exotic charset would refuse legitimate
// mail, and the bytes still get checked for CR, LF and NUL.
func newWordDecoder() *mime.WordDecoder {
	return &mime.WordDecoder{CharsetReader: func(_ string, input io.Reader) (io.Reader, error) {
		return input, nil
	}}
}

// parseAddressField parses f, whose canonical name is name, as an address
// list and applies the per-field rules.
func parseAddressField(name string, f Field, dec *mime.WordDecoder) ([]*mail.Address, *Violation) {
	value := f.Value()
	if strings.TrimSpace(value) == "" {
		if name == "Bcc" {
			return nil, nil // RFC 5322 §3.6.3 allows an empty Bcc
		}
		return nil, &Violation{Rule: RuleAddressList, Line: f.Line,
			Msg: fmt.Sprintf("%s field is empty", name)}
	}
	p := mail.AddressParser{WordDecoder: dec}
	as, err := p.ParseList(value)
	if err != nil {
		return nil, &Violation{Rule: RuleAddressList, Line: f.Line,
			Msg: fmt.Sprintf("%s field is not a valid address list", name)}
	}
	switch {
	case name == "From" && len(as) == 0:
		return nil, &Violation{Rule: RuleAddressList, Line: f.Line, Msg: "From field names no mailbox"}
	case name == "Sender" && len(as) != 1:
		return nil, &Violation{Rule: RuleAddressList, Line: f.Line, Msg: "Sender field must name exactly one mailbox"}
	}
	for _, a := range as {
		if hasControl(a.Name) || hasControl(a.Address) {
			return nil, &Violation{Rule: RuleHeaderInjection, Line: f.Line,
				Msg: fmt.Sprintf("%s field decodes to a control character (header injection?)", name)}
		}
		// `"=?utf-8?q?boss=40corp.example=3E?=" <x@evil.example>` displays
		// as another address, and a program that decodes and re-emits the
		// name creates one. A display name that mentions an address is
		// common ("bob@example.com" <bob@example.com>); one that also holds
		// address-list punctuation is not.
		if strings.Contains(a.Name, "@") && strings.ContainsAny(a.Name, "<>,;") {
			return nil, &Violation{Rule: RuleHeaderInjection, Line: f.Line,
				Msg: fmt.Sprintf("%s field has a display name shaped like an address (header injection?)", name)}
		}
	}
	return as, nil
}

var encodedWordStart = []byte("=?")

// checkEncodedWords refuses encoded words that decode to CR, LF or NUL in a
// field that is not an address field. sealpost passes them on encoded, but
// the mail readers and scripts downstream that decode a Subject and write it
// into another message would be injected.
func checkEncodedWords(f Field, dec *mime.WordDecoder) *Violation {
	if !bytes.Contains(f.Raw, encodedWordStart) {
		return nil
	}
	text, err := dec.DecodeHeader(f.Value())
	if err != nil {
		return nil // malformed encoded words stay literal text
	}
	if hasControl(text) {
		return &Violation{Rule: RuleHeaderInjection, Line: f.Line,
			Msg: fmt.Sprintf("%s field has an encoded word that decodes to a control character (header injection?)", headerName(f.Name))}
	}
	return nil
}

// hasControl reports a CR, LF or NUL: the bytes that end or break a line.
func hasControl(s string) bool {
	return strings.ContainsAny(s, "\r\n\x00")
}

// headerName returns name for use in a reply: a known field's canonical
// spelling, or "a" generic phrase for anything else, so that attacker-chosen
// field names never reach the reply line.
func headerName(name string) string {
	if i := singletonIndex(name); i >= 0 {
		return singletons[i]
	}
	return "a header"
}
