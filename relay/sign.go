package relay

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"sealpost/policy"
)

// errSigning marks a failure of sealpost's own signing (not the message's
// fault): the client gets a temporary 451 and keeps the message.
var errSigning = errors.New("dkim signing failed")

// unsignedError is a message whose From domain has no key while
// dkim.unsigned = "reject".
type unsignedError struct{ domain string }

func (e *unsignedError) Error() string {
	return "no DKIM key for From domain " + e.domain
}

func (e *unsignedError) reply() *smtp.SMTPError {
	return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
		Message: fmt.Sprintf("This host has no DKIM key for the From domain %s and does not send unsigned mail (rule dkim-no-key)", e.domain)}
}

// messageSigner is the signing of one message plus what the audit record
// says about it.
type messageSigner struct {
	*signing
	summary string
}

// Summary names the signatures, e.g. "d=example.com s=s2026 rsa-sha256".
func (m *messageSigner) Summary() string { return m.summary }

// signerFor starts signing a message for its header From domain. Signing
// happens after the header edits and before spooling, so every retry sends
// the same signed bytes. It returns nil when the message goes unsigned by
// configuration.
func signerFor(live *livePolicy, h *policy.Header, now time.Time) (*messageSigner, error) {
	keys := live.dkim
	domain := fromDomain(h)
	var sg *signing
	if keys != nil && domain != "" {
		var err error
		if sg, err = keys.newSigning(domain, headerFieldNames(h), now); err != nil {
			return nil, fmt.Errorf("%w: %v", errSigning, err)
		}
	}
	if sg == nil {
		if live.unsigned == "reject" {
			return nil, &unsignedError{domain: domain}
		}
		return nil, nil
	}
	var parts []string
	for _, k := range keys.forDomain(domain) {
		parts = append(parts, "d="+k.Domain+" s="+k.Selector+" "+k.Algo)
	}
	return &messageSigner{signing: sg, summary: strings.Join(parts, ", ")}, nil
}

// fromDomain is the domain of the (first) header From address; the header
// checks have made sure there is one.
func fromDomain(h *policy.Header) string {
	addrs, err := policy.FromAddresses(h)
	if err != nil || len(addrs) == 0 {
		return ""
	}
	_, domain, err := policy.SplitAddress(addrs[0].Address)
	if err != nil {
		return ""
	}
	return domain
}

func headerFieldNames(h *policy.Header) []string {
	names := make([]string, len(h.Fields))
	for i, f := range h.Fields {
		names[i] = f.Name
	}
	return names
}
