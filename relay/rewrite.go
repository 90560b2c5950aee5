package relay

import (
	"net/mail"
	"strings"

	"sealpost/policy"
)

// rewriteHeader applies rewrite.header_from before the message is signed,
// so the signature covers the From the upstream sees. The address becomes
// the account the upstream authenticates (or rewrite.address); the display
// name stays, so recipients still see who wrote; the original From goes to
// X-Original-From, and to Reply-To when the message has none, so replies
// still reach the writer.
func (s *session) rewriteHeader(live *livePolicy, h *policy.Header) {
	rw := live.cfg.Rewrite
	if rw.HeaderFrom == "" || rw.HeaderFrom == RewriteNever {
		return
	}
	account := rw.Address
	if account == "" && s.r.routes != nil {
		account = s.r.routes.route(s.from).cfg.Username
	}
	rewriteFrom(h, rw, account)
}

// rewriteFrom does the work of rewriteHeader; it reports whether From
// changed. A From it cannot parse is left alone: the header checks have
// already passed it, and guessing would be worse.
func rewriteFrom(h *policy.Header, rw RewriteConfig, account string) bool {
	if _, _, err := policy.SplitAddress(account); err != nil {
		return false
	}
	addrs, err := policy.FromAddresses(h)
	if err != nil || len(addrs) == 0 {
		return false
	}
	if rw.HeaderFrom == RewriteIfNotAllowed && fromAllowed(addrs, rw.AllowedFrom, account) {
		return false
	}
	if len(addrs) == 1 && addrs[0].Address == account {
		return false // already the account, exactly
	}
	idx := -1
	for i, f := range h.Fields {
		if strings.EqualFold(f.Name, "From") {
			idx = i
			break
		}
	}
	if idx < 0 {
		return false
	}
	original := h.Fields[idx].Value()
	replacement := (&mail.Address{Name: addrs[0].Name, Address: account}).String()
	var tmp policy.Header
	tmp.Add("From", replacement)
	h.Fields[idx] = tmp.Fields[0]
	if !h.Has("Reply-To") {
		h.Add("Reply-To", original)
	}
	h.Del("X-Original-From") // a client's own would be taken for ours
	h.Add("X-Original-From", original)
	return true
}

// fromAllowed reports whether every From mailbox is one the upstream
// accepts as it is: the account itself or a rewrite.allowed_from pattern.
func fromAllowed(addrs []*mail.Address, allowed []string, account string) bool {
	rules := policy.SenderRules{AllowedSenders: append([]string{account}, allowed...)}
	for _, a := range addrs {
		if rules.CheckEnvelopeSender(a.Address) != nil {
			return false
		}
	}
	return true
}
