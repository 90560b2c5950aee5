package policy

import (
	"net/netip"
	"strings"
	"unicode/utf8"
)

// RFC 5321 §4.5.3.1 limits, in octets.
const (
	maxLocalPart = 64
	maxDomain    = 255
	// A path is "<" address ">" and may be 256 octets, so the address
	// between the brackets may be 254.
	maxPath = 256 - 2
)

// CheckEnvelopeAddress checks addr, a MAIL FROM or RCPT TO address without
// its angle brackets, against RFC 5321 §4.1.2: a local part that is a
// dot-atom or a quoted string, "@", and a domain of hostname labels or an
// address literal ([192.0.2.1] or [IPv6:2001:db8::1]); the length limits;
// no control characters and no space outside quotes. Non-ASCII (UTF-8) is
// allowed only when smtputf8 (RFC 6531). The empty address (the null
// reverse-path of MAIL FROM:<>) is allowed only when isSender. Source
// routes and addresses without a domain are refused: sealpost only relays
// to an upstream, which needs a full address, so the caller should qualify
// a bare "root" before checking.
func CheckEnvelopeAddress(addr string, smtputf8 bool, isSender bool) *Violation {
	if addr == "" {
		if isSender {
			return nil
		}
		return envelopeViolation("empty recipient address")
	}
	_, _, v := parseEnvelope(addr, smtputf8)
	return v
}

// SplitAddress splits an envelope address into its local part and its
// domain, lowercased (domains are case-insensitive; local parts are, in
// theory, not, so they are returned as given, quotes included). It accepts
// what CheckEnvelopeAddress accepts with smtputf8 set, except the empty
// address; the error is a *Violation.
func SplitAddress(addr string) (local, domain string, err error) {
	if addr == "" {
		return "", "", envelopeViolation("empty address")
	}
	local, domain, v := parseEnvelope(addr, true)
	if v != nil {
		return "", "", v
	}
	return local, strings.ToLower(domain), nil
}

func envelopeViolation(msg string) *Violation {
	return &Violation{Rule: RuleEnvelopeAddress, Msg: msg}
}

func parseEnvelope(addr string, smtputf8 bool) (local, domain string, v *Violation) {
	if len(addr) > maxPath {
		return "", "", envelopeViolation("address is longer than 254 octets")
	}
	if strings.ContainsFunc(addr, isControl) {
		return "", "", envelopeViolation("address contains a control character")
	}
	if !smtputf8 {
		for i := 0; i < len(addr); i++ {
			if addr[i] >= 0x80 {
				return "", "", envelopeViolation("non-ASCII address without SMTPUTF8")
			}
		}
	} else if !utf8.ValidString(addr) {
		return "", "", envelopeViolation("address is not valid UTF-8")
	}
	var rest string
	if addr[0] == '"' {
		end, ok := quotedStringEnd(addr)
		if !ok {
			return "", "", envelopeViolation("address has a malformed quoted local part")
		}
		local, rest = addr[:end], addr[end:]
	} else {
		at := strings.IndexByte(addr, '@')
		if at < 0 {
			return "", "", envelopeViolation("address has no domain")
		}
		local, rest = addr[:at], addr[at:]
		if !dotAtom(local) {
			if strings.ContainsAny(local, " \t") {
				return "", "", envelopeViolation("address has a space outside quotes")
			}
			return "", "", envelopeViolation("address has a malformed local part")
		}
	}
	if len(rest) == 0 || rest[0] != '@' {
		return "", "", envelopeViolation("address has no domain")
	}
	domain = rest[1:]
	if len(local) > maxLocalPart {
		return "", "", envelopeViolation("address local part is longer than 64 octets")
	}
	if len(domain) > maxDomain {
		return "", "", envelopeViolation("address domain is longer than 255 octets")
	}
	if !validDomain(domain) {
		if strings.ContainsAny(domain, " \t") {
			return "", "", envelopeViolation("address has a space outside quotes")
		}
		return "", "", envelopeViolation("address has a malformed domain")
	}
	return local, domain, nil
}

// quotedStringEnd returns the index just past the closing quote of the
// RFC 5321 quoted string at the start of s.
func quotedStringEnd(s string) (int, bool) {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '"':
			return i + 1, true
		case '\\':
			// quoted-pairSMTP = "\" %d32-126
			if i+1 >= len(s) || s[i+1] < 32 || s[i+1] > 126 {
				return 0, false
			}
			i++
		}
		// Every other byte left after the control check is qtextSMTP
		// (%d32-33 / %d35-91 / %d93-126) or UTF-8.
	}
	return 0, false
}

// dotAtom reports whether s is an RFC 5321 Dot-string: atoms of atext joined
// by single dots. Non-ASCII bytes count as atext (RFC 6531 §3.3); whether
// they are allowed at all was decided before.
func dotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '.' {
			if s[i-1] == '.' {
				return false
			}
			continue
		}
		if !isAtext(c) {
			return false
		}
	}
	return true
}

func isAtext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c >= 0x80:
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// validDomain reports whether d is a hostname (LDH labels, or U-labels of
// UTF-8 when that was allowed) or an address literal.
func validDomain(d string) bool {
	if d == "" {
		return false
	}
	if d[0] == '[' {
		return validAddressLiteral(d)
	}
	for label := range strings.SplitSeq(d, ".") {
		if !validLabel(label) {
			return false
		}
	}
	return true
}

func validLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c >= 0x80) {
			return false
		}
	}
	return true
}

// validAddressLiteral accepts "[IPv4]" and "[IPv6:addr]" (RFC 5321
// §4.1.3). General address literals (other tags) name no protocol anything
// supports and are refused.
func validAddressLiteral(d string) bool {
	if len(d) < 3 || d[len(d)-1] != ']' {
		return false
	}
	inner := d[1 : len(d)-1]
	if v6, ok := cutPrefixFold(inner, "IPv6:"); ok {
		a, err := netip.ParseAddr(v6)
		return err == nil && a.Is6() && a.Zone() == ""
	}
	a, err := netip.ParseAddr(inner)
	return err == nil && a.Is4()
}

// isControl reports C0 and C1 control characters and DEL. Invalid UTF-8
// decodes to U+FFFD and is caught by the UTF-8 check instead.
func isControl(r rune) bool {
	return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0)
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}
