package policy

import (
	"errors"
	"fmt"
	"strings"
)

// SenderRules hold who may send through this host. The zero value allows
// any envelope sender and refuses every From domain: the From rule must be
// configured (relay fills SigningDomains from the DKIM keys) or explicitly
// relaxed.
type SenderRules struct {
	// AllowedSenders are envelope sender patterns (see ValidatePattern);
	// an empty list allows any sender.
	AllowedSenders []string
	// AllowedFromDomains are header From domains allowed in addition to
	// SigningDomains: "example.com" or "*.example.com" (any subdomain, not
	// example.com itself).
	AllowedFromDomains []string
	// SigningDomains are the domains sealpost has a DKIM key for; matched
	// exactly.
	SigningDomains []string
	// AllowAnyFrom skips the From domain rule. Dangerous: a compromised app
	// can then send as anyone, and DKIM will not vouch for it.
	AllowAnyFrom bool
}

// ValidatePattern checks an AllowedSenders pattern: "*" (anyone), or
// LOCAL@DOMAIN where LOCAL is "*" or a literal local part and DOMAIN is "*",
// a domain, or "*." followed by a domain (any subdomain at any depth, not
// the domain itself). Examples: "*@example.com", "cron@app01.example.com",
// "*@*.example.com". A "*" anywhere else is refused rather than guessed at.
func ValidatePattern(p string) error {
	if p == "*" {
		return nil
	}
	at := strings.LastIndexByte(p, '@')
	if at < 0 {
		return fmt.Errorf("sender pattern %q: want \"*\" or LOCAL@DOMAIN", p)
	}
	local, domain := p[:at], p[at+1:]
	if local != "*" {
		if strings.Contains(local, "*") {
			return fmt.Errorf("sender pattern %q: the local part must be \"*\" or have no \"*\"", p)
		}
		if _, _, err := SplitAddress(local + "@example.com"); err != nil {
			return fmt.Errorf("sender pattern %q: invalid local part: %w", p, err)
		}
	}
	if err := validateDomainPattern(domain); err != nil {
		return fmt.Errorf("sender pattern %q: %w", p, err)
	}
	return nil
}

// ValidateFromDomain checks an AllowedFromDomains entry: a domain or
// "*." followed by a domain.
func ValidateFromDomain(d string) error {
	if d == "*" {
		return errors.New(`"*" is not a From domain; set AllowAnyFrom to allow any`)
	}
	if err := validateDomainPattern(d); err != nil {
		return fmt.Errorf("From domain %q: %w", d, err)
	}
	return nil
}

func validateDomainPattern(d string) error {
	if d == "*" {
		return nil
	}
	d = strings.TrimPrefix(d, "*.")
	if strings.Contains(d, "*") {
		return errors.New(`a domain may only be "*" or start with "*."`)
	}
	if d == "" || d[0] == '[' || !validDomain(d) {
		return fmt.Errorf("invalid domain %q", d)
	}
	return nil
}

// CheckEnvelopeSender applies AllowedSenders to a MAIL FROM address. The
// null sender "" is always allowed: bounces must get through, and they
// carry no sender to impersonate. Local parts are compared without regard
// to case, like domains: the providers sealpost relays to treat them so, and
// a case-sensitive match would only refuse mail that a typo in case makes
// look different. An address that does not parse is refused with
// "envelope-address".
func (r SenderRules) CheckEnvelopeSender(addr string) *Violation {
	if addr == "" || len(r.AllowedSenders) == 0 {
		return nil
	}
	local, domain, err := SplitAddress(addr)
	if err != nil {
		return asViolation(err, RuleEnvelopeAddress)
	}
	for _, p := range r.AllowedSenders {
		if matchSender(p, local, domain) {
			return nil
		}
	}
	return &Violation{Rule: RuleSenderNotAllowed,
		Msg: fmt.Sprintf("sender <%s> is not allowed to send through this host", addr)}
}

func matchSender(p, local, domain string) bool {
	if p == "*" {
		return true
	}
	at := strings.LastIndexByte(p, '@')
	if at < 0 {
		return false
	}
	pl, pd := p[:at], p[at+1:]
	if pl != "*" && !strings.EqualFold(pl, local) {
		return false
	}
	return matchDomain(pd, domain)
}

// matchDomain matches a domain against "*", "*.suffix" or an exact domain,
// without regard to case.
func matchDomain(pattern, domain string) bool {
	if pattern == "*" {
		return true
	}
	if suffix, ok := strings.CutPrefix(pattern, "*."); ok {
		return len(domain) > len(suffix)+1 &&
			domain[len(domain)-len(suffix)-1] == '.' &&
			strings.EqualFold(domain[len(domain)-len(suffix):], suffix)
	}
	return strings.EqualFold(pattern, domain)
}

// CheckFromDomains requires the domain of every From mailbox to be in
// SigningDomains (exactly) or AllowedFromDomains (exactly or by "*."
// pattern), unless AllowAnyFrom. With both lists empty no From can pass,
// and the violation says so, rather than silently allowing any. A missing
// or malformed From is returned as CheckHeader would report it.
func (r SenderRules) CheckFromDomains(h *Header) *Violation {
	if r.AllowAnyFrom {
		return nil
	}
	line := 0
	for _, f := range h.Fields {
		if strings.EqualFold(f.Name, "From") {
			line = f.Line
			break
		}
	}
	if len(r.SigningDomains) == 0 && len(r.AllowedFromDomains) == 0 {
		return &Violation{Rule: RuleFromDomainNotAllowed, Line: line,
			Msg: "no From domain is configured for this host"}
	}
	as, err := FromAddresses(h)
	if err != nil {
		return asViolation(err, RuleAddressList)
	}
	for _, a := range as {
		at := strings.LastIndexByte(a.Address, '@')
		domain := strings.ToLower(a.Address[at+1:])
		if !r.fromDomainAllowed(domain) {
			return &Violation{Rule: RuleFromDomainNotAllowed, Line: line,
				Msg: fmt.Sprintf("From domain %s is not one this host may send for", domain)}
		}
	}
	return nil
}

func (r SenderRules) fromDomainAllowed(domain string) bool {
	for _, d := range r.SigningDomains {
		if strings.EqualFold(d, domain) {
			return true
		}
	}
	for _, p := range r.AllowedFromDomains {
		if p != "*" && matchDomain(p, domain) {
			return true
		}
	}
	return false
}

// asViolation returns err as a *Violation; the functions called here only
// return those, but a future error must not become a panic or an accept.
func asViolation(err error, rule string) *Violation {
	var v *Violation
	if errors.As(err, &v) {
		return v
	}
	return &Violation{Rule: rule, Msg: "address could not be checked"}
}
