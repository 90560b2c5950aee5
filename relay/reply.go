package relay

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/emersion/go-smtp"
)

// Replies a client sees. go-smtp recognises *smtp.SMTPError only by a plain
// type assertion and turns any other error into a permanent 554 that shows
// its text, so every Session method returns one of these, unwrapped.
var (
	replySpoolFailure = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary local problem, message not accepted: try again later"}
	replySpoolFull    = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Insufficient local storage, message not accepted: try again later"}
	replyTooBig       = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "Message exceeds the maximum size"}
	replyTimeout      = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Timed out reading the message: not accepted"}
	replyNoAccess     = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Access denied: this relay accepts mail from its own host only"}
	replyBusy         = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many connections, try again later"}
	replyLineTooLong  = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Message has a line longer than SMTP allows: not accepted"}
)

func replyQueued(id string) error {
	// A nil from Data would make go-smtp say "250 2.0.0 OK: queued" without
	// the id; the admin needs the id to find the message in the log and queue.
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "OK: queued as " + id}
}

// dataReply maps the outcome of reading and spooling a message to the reply
// the client sees. Everything that is not the client's fault is temporary,
// so a well-behaved client keeps the message and tries again; no internal
// detail (paths, errno text) reaches the client.
func dataReply(err error) *smtp.SMTPError {
	var se *smtp.SMTPError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &se):
		return se
	case errors.Is(err, smtp.ErrTooLongLine):
		return replyLineTooLong
	case errors.Is(err, os.ErrDeadlineExceeded):
		return replyTimeout
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return replySpoolFull
	default:
		return replySpoolFailure
	}
}

// smtpErrorString renders a reply for the audit log, the way the client saw it.
func smtpErrorString(e *smtp.SMTPError) string {
	if e == nil {
		return ""
	}
	return fmt.Sprintf("%d %d.%d.%d %s", e.Code, e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2], e.Message)
}
