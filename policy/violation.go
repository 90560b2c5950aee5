package policy

import "strconv"

// Violation is a refused rule. It is a value, not a failure of sealpost: the
// caller maps it to a reply (550/554 5.6.0, 550 5.7.1) and an audit record.
//
// Rule is a stable short name ("bare-lf", "duplicate-field", …) for audit
// logs, metrics and replies; renaming one breaks dashboards and alerts, so
// rule names only ever get added. Msg is one sentence that is safe to show
// the client: it never echoes header content beyond a field name, because a
// reply line must not carry attacker-chosen bytes. Msg does not include the
// line number; Line holds it (1-based, 0 when unknown or not about a line),
// and Error joins them.
type Violation struct {
	Rule string
	Line int
	Msg  string
}

// Error formats the violation as "rule: line N: msg" for logs and for
// callers that treat it as an error.
func (v *Violation) Error() string {
	if v.Line > 0 {
		return v.Rule + ": line " + strconv.Itoa(v.Line) + ": " + v.Msg
	}
	return v.Rule + ": " + v.Msg
}

// Rule names. They are part of the audit-log contract.
const (
	RuleBareLF                  = "bare-lf"
	RuleBareCR                  = "bare-cr"
	RuleNULByte                 = "nul-byte"
	RuleHeaderSyntax            = "header-syntax"
	RuleHeaderContinuationFirst = "header-continuation-first"
	RuleDuplicateField          = "duplicate-field"
	RuleAddressList             = "address-list"
	RuleMissingFrom             = "missing-from"
	Rule8BitHeader              = "8bit-header"
	RuleLineTooLong             = "line-too-long"
	RuleHeaderTooBig            = "header-too-big"
	RuleHeaderInjection         = "header-injection"
	RuleEnvelopeAddress         = "envelope-address"
	RuleSenderNotAllowed        = "sender-not-allowed"
	RuleFromDomainNotAllowed    = "from-domain-not-allowed"
)
