package relay

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/emersion/go-smtp"

	"sealpost/policy"
)

// Replies a client sees. go-smtp recognises *smtp.SMTPError only by a plain
// type assertion and turns any other error into a permanent 554 that shows
// its text, so every Session method returns one of these, unwrapped.
var (
	replySpoolFailure = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary local problem, message not accepted: try again later"}
	replySpoolFull    = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Insufficient local storage, message not accepted: try again later"}
	replyTimeout      = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Timed out reading the message, closing connection: not accepted"}
	replyNoAccess     = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Access denied: this relay accepts mail from its own host only"}
	replyBusy         = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many connections, try again later"}
	replyLineTooLong  = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Message has a line longer than SMTP allows: not accepted"}
)

func replyQueued(id string) error {
	// A nil from Data would make go-smtp say "250 2.0.0 OK: queued" without
	// the id; the admin needs the id to find the message in the log and queue.
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "OK: queued as " + id}
}

// dataOutcome maps the outcome of reading and spooling a message to the
// reply the client sees, and the rule the audit record and the rejection
// metric name. Everything that is not the client's fault is temporary, so
// a well-behaved client keeps the message and tries again; no internal
// detail (paths, errno text) reaches the client. Only the "spool" and
// "dkim" rules are sealpost's own trouble; the others are the client's
// doing and must not look like a disk problem on a dashboard.
func dataOutcome(err error) (*smtp.SMTPError, string) {
	var se *smtp.SMTPError
	var ue *unsignedError
	switch {
	case err == nil:
		return nil, ""
	case errors.Is(err, smtp.ErrDataTooLarge):
		return smtp.ErrDataTooLarge, "too-big"
	case errors.As(err, &se):
		return se, "refused"
	case errors.As(err, &ue):
		return ue.reply(), "dkim-no-key"
	case errors.Is(err, smtp.ErrTooLongLine):
		return replyLineTooLong, "line-too-long"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return replyTimeout, "timeout"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed), errors.Is(err, smtp.ErrDataReset):
		// Nobody reads this reply; the client went away mid-message.
		return replySpoolFailure, "client-gone"
	case errors.Is(err, errSigning):
		return replySpoolFailure, "dkim"
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return replySpoolFull, "spool"
	default:
		return replySpoolFailure, "spool"
	}
}

// smtpErrorString renders a reply for the audit log, the way the client saw it.
func smtpErrorString(e *smtp.SMTPError) string {
	if e == nil {
		return ""
	}
	return fmt.Sprintf("%d %d.%d.%d %s", e.Code, e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2], e.Message)
}

// ruleBareLineEnding is a bare CR or LF seen on the wire (see
// lineEndingWatch); the message checks see the others.
const ruleBareLineEnding = "bare-line-ending"

// violationReply maps a broken rule to its reply (DESIGN.md): smuggling
// and stray line endings 554 5.6.0, malformed or injected headers 550
// 5.6.0, senders and From domains this host may not use 550 5.7.1. The text
// names the rule, so the admin reading the application's error log knows
// what to fix.
func violationReply(v *policy.Violation) *smtp.SMTPError {
	code, enhanced := 550, smtp.EnhancedCode{5, 6, 0}
	switch v.Rule {
	case policy.RuleBareLF, policy.RuleBareCR, policy.RuleNULByte, ruleBareLineEnding:
		code = 554
	case policy.RuleSenderNotAllowed, policy.RuleFromDomainNotAllowed:
		enhanced = smtp.EnhancedCode{5, 7, 1}
	}
	return &smtp.SMTPError{Code: code, EnhancedCode: enhanced, Message: violationText(v)}
}

func violationText(v *policy.Violation) string {
	if v.Line > 0 {
		return fmt.Sprintf("%s (line %d, rule %s)", v.Msg, v.Line, v.Rule)
	}
	return fmt.Sprintf("%s (rule %s)", v.Msg, v.Rule)
}

func replyBadSender(v *policy.Violation) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 7}, Message: violationText(v)}
}

func replyBadRecipient(v *policy.Violation) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: violationText(v)}
}

// alwaysEnforced names the rules that report mode does not relax: a bare
// CR or LF passed on is exactly what SMTP smuggling needs, and a NUL breaks
// downstream software.
func alwaysEnforced(rule string) bool {
	switch rule {
	case policy.RuleBareLF, policy.RuleBareCR, policy.RuleNULByte, ruleBareLineEnding:
		return true
	}
	return false
}
