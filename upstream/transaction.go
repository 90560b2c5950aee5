package upstream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// Sizes of the transaction's buffers. One body write of up to writeBuffer
// bytes becomes one tls.Conn.Write (at most two full TLS records), instead
// of one per 4 KiB as with go-smtp's DATA writer.
const (
	writeBuffer = 32 << 10
	readBuffer  = 4 << 10
	// maxReplyBytes bounds one reply, continuation lines included, so a
	// broken or hostile upstream cannot make us buffer without end.
	maxReplyBytes = 64 << 10
	// maxInFlight bounds the commands sent ahead of their replies. RFC 2920
	// section 3.1 warns that a client writing while the server is blocked
	// writing replies nobody reads would deadlock; 100 short commands and
	// their replies stay far below any socket buffer.
	maxInFlight = 100
)

var errReplyTooLong = fmt.Errorf("upstream reply longer than %d bytes", maxReplyBytes)

// startTransactions takes the connection over from go-smtp once AUTH is
// done: mail transactions are driven here, so that commands can be
// pipelined and the body written in large pieces. go-smtp keeps its own
// read buffer; that is safe because a server sends nothing unasked after
// its reply to AUTH (or EHLO).
func (s *session) startTransactions() {
	s.limit = &cappedReader{r: s.tls}
	s.r = textproto.NewReader(bufio.NewReaderSize(s.limit, readBuffer))
	s.w = bufio.NewWriterSize(&deadlineWriter{s: s}, writeBuffer)
	s.scratch = make([]byte, writeBuffer)
	s.pipelining, _ = s.smt.Extension("PIPELINING")
	s.eightBit, _ = s.smt.Extension("8BITMIME")
	s.size, _ = s.smt.Extension("SIZE")
}

// cappedReader gives each reply at most maxReplyBytes of the connection
// (bufio's read-ahead included, which is at most readBuffer).
type cappedReader struct {
	r    io.Reader
	left int
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errReplyTooLong
	}
	if len(p) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= n
	return n, err
}

// deadlineWriter gives every write to the connection CommandTimeout, so
// an upstream that stops reading mid-body cannot hold a delivery forever.
type deadlineWriter struct{ s *session }

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.s.tls.SetWriteDeadline(time.Now().Add(d.s.c.cfg.CommandTimeout))
	return d.s.tls.Write(p)
}

// command is one line of the envelope and the Op its reply is reported as.
type command struct {
	op   string
	line string
	rcpt int // index into Message.To for RCPT
}

// send runs one mail transaction on an open session.
//
// With PIPELINING advertised (RFC 2920), RSET (on a reused connection),
// MAIL, every RCPT and DATA go out in one write and their replies are read
// in order; without it, each command waits for its reply. Either way the
// outcome is the same as a command-by-command dialogue: a refused MAIL
// fails the attempt, each RCPT refusal is that recipient's fate, and the
// body is sent only after a 354 when at least one recipient was accepted.
// Replies to commands that turned out pointless (RCPT after a refused
// MAIL, DATA after every RCPT was refused) are still read, so the
// connection stays in step; a 354 nobody wants is answered with a lone
// dot as RFC 2920 section 3.1 says, which the server must refuse for
// lack of recipients (a server that refused MAIL yet sends 354 is hung up
// on instead). Whenever the dialogue cannot be kept in step the session is
// marked broken and must not be reused.
func (s *session) send(ctx context.Context, msg Message, body io.Reader) (perRcpt []error, reply string, err error) {
	defer s.watch(ctx)()
	if s.broken {
		return nil, "", &Error{Op: "mail", Err: errors.New("connection unusable after an earlier failure")}
	}
	if err := s.requireTLS("mail"); err != nil {
		return nil, "", err
	}
	if msg.Size > 0 {
		if limit, ok := s.smt.MaxMessageSize(); ok && limit > 0 && msg.Size > int64(limit) {
			// The upstream said in advance it will refuse this; no point in
			// sending it, and no point in retrying.
			return nil, "", &Error{Op: "mail", Code: 552, EnhancedCode: [3]int{5, 3, 4},
				Message: fmt.Sprintf("message is %d bytes, the upstream accepts at most %d", msg.Size, limit)}
		}
	}
	if msg.SMTPUTF8 {
		if ok, _ := s.smt.Extension("SMTPUTF8"); !ok {
			return nil, "", &Error{Op: "mail", Code: 553, EnhancedCode: [3]int{5, 6, 7},
				Message: "message needs SMTPUTF8, which the upstream does not offer"}
		}
	}
	// A line break in an address would end the command early and let the
	// rest be read as a command of its own. The relay's SMTP server never
	// accepts such an address, so this is a bug elsewhere: bounce, since a
	// retry cannot help.
	for _, a := range append([]string{msg.From}, msg.To...) {
		if strings.ContainsAny(a, "\r\n") {
			return nil, "", &Error{Op: "mail", Code: 553, EnhancedCode: [3]int{5, 1, 7},
				Message: fmt.Sprintf("address %q contains a line break", a)}
		}
	}

	cmds := make([]command, 0, len(msg.To)+3)
	if s.used {
		// The previous transaction ended (or was abandoned after a
		// refusal); RSET makes sure, and its reply shows the idle
		// connection is still alive before anything of this message counts.
		cmds = append(cmds, command{op: "rset", line: "RSET"})
	}
	s.used = true
	cmds = append(cmds, command{op: "mail", line: s.mailCommand(msg)})
	for i, to := range msg.To {
		cmds = append(cmds, command{op: "rcpt", line: "RCPT TO:<" + to + ">", rcpt: i})
	}
	cmds = append(cmds, command{op: "data", line: "DATA"})

	inFlight := 1
	if s.pipelining {
		inFlight = maxInFlight
	}
	perRcpt = make([]error, len(msg.To))
	var mailErr *Error
	accepted, sent, answered, dataCode := 0, 0, 0, 0
	for answered < len(cmds) {
		for sent < len(cmds) && sent-answered < inFlight {
			c := cmds[sent]
			// What the replies so far say can make the rest pointless;
			// in lockstep that is always known, pipelined only between
			// groups.
			if mailErr != nil || c.op == "data" && answered == sent && accepted == 0 {
				break
			}
			s.w.WriteString(c.line)
			s.w.WriteString("\r\n")
			sent++
		}
		if sent == answered {
			break
		}
		// From here on, every failure returns perRcpt: refusals already
		// read stay authoritative for their recipients (all nil after a
		// refused MAIL, so nothing is claimed then).
		if err := s.w.Flush(); err != nil {
			s.broken = true
			return perRcpt, "", newError(ctx, cmds[answered].op, err)
		}
		for ; answered < sent; answered++ {
			c := cmds[answered]
			code, text, err := s.readReply(ctx, c.op, s.c.cfg.CommandTimeout)
			if err != nil {
				return perRcpt, "", err
			}
			switch c.op {
			case "rset":
				if code/100 != 2 {
					// Whatever the server thinks of this connection, it is
					// not one to carry mail on; the pool dials afresh.
					s.broken = true
					return nil, "", s.replyError(ctx, c.op, code, text)
				}
			case "mail":
				if code/100 == 2 {
					continue
				}
				e := s.replyError(ctx, c.op, code, text)
				if s.broken {
					return nil, "", e
				}
				mailErr = e
			case "rcpt":
				if mailErr != nil {
					// The server refuses these for want of a sender; the
					// reply matters only to keep in step.
					if code == 421 {
						s.broken = true
						return nil, "", mailErr
					}
					continue
				}
				if code/100 == 2 {
					accepted++
					continue
				}
				e := s.replyError(ctx, c.op, code, text)
				perRcpt[c.rcpt] = e
				if s.broken {
					return perRcpt, "", e
				}
			case "data":
				dataCode = code
				if code == 354 {
					continue
				}
				// A refusal (or, marking the session broken, a reply that
				// makes no sense); after a refused MAIL or every RCPT
				// refused it is expected and the earlier error stands.
				e := s.replyError(ctx, c.op, code, text)
				if mailErr == nil && accepted > 0 {
					return perRcpt, "", e
				}
			}
		}
	}

	switch {
	case mailErr != nil:
		if dataCode == 354 {
			// A server that refused MAIL yet invites the body is out of
			// step with itself; a lone dot might deliver an empty message
			// to whoever it thinks is a recipient. Hanging up mid-DATA
			// makes it discard the transaction.
			s.broken = true
			s.raw.Close()
		}
		return nil, "", mailErr
	case accepted == 0:
		if dataCode == 354 {
			if err := s.endEmptyData(ctx); err != nil {
				s.broken = true
			}
		}
		return perRcpt, "", &Error{Op: "rcpt", Message: fmt.Sprintf("all %d recipients refused", len(msg.To)), Err: ErrAllRecipientsRefused}
	}

	reply, err = s.sendBody(ctx, body)
	return perRcpt, reply, err
}

// mailCommand builds MAIL FROM with the parameters go-smtp's Client would
// add for our options.
func (s *session) mailCommand(msg Message) string {
	var b strings.Builder
	b.WriteString("MAIL FROM:<")
	b.WriteString(msg.From)
	b.WriteString(">")
	if s.eightBit {
		b.WriteString(" BODY=8BITMIME")
	}
	if s.size && msg.Size > 0 {
		b.WriteString(" SIZE=")
		b.WriteString(strconv.FormatInt(msg.Size, 10))
	}
	if msg.SMTPUTF8 {
		b.WriteString(" SMTPUTF8")
	}
	return b.String()
}

// sendBody writes the dot-stuffed body and the final dot in as few writes
// as the buffer allows, then reads the reply.
func (s *session) sendBody(ctx context.Context, body io.Reader) (string, error) {
	dw := &dotWriter{w: s.w}
	src := &readErrorReader{r: body}
	if _, err := io.CopyBuffer(dw, src, s.scratch); err != nil {
		s.broken = true
		if src.err != nil {
			// Ending the data would deliver a truncated message; dropping
			// the connection makes the upstream discard it.
			s.raw.Close()
			return "", &Error{Op: "data", Message: "reading the message body", Err: src.err}
		}
		return "", newError(ctx, "data", err)
	}
	dw.Close()
	if err := s.w.Flush(); err != nil {
		s.broken = true
		return "", newError(ctx, "data", err)
	}
	// The upstream may scan the message before it answers.
	code, text, err := s.readReply(ctx, "data", 2*s.c.cfg.CommandTimeout)
	if err != nil {
		return "", err
	}
	if code/100 != 2 {
		return "", s.replyError(ctx, "data", code, text)
	}
	return text, nil
}

// endEmptyData ends a DATA that no recipient wants with a lone dot and
// reads the reply, whatever it is, to stay in step.
func (s *session) endEmptyData(ctx context.Context) error {
	s.w.WriteString(".\r\n")
	if err := s.w.Flush(); err != nil {
		return err
	}
	code, _, err := s.readReply(ctx, "data", s.c.cfg.CommandTimeout)
	if err != nil {
		return err
	}
	if code == 421 {
		return errors.New("the upstream is closing the connection")
	}
	return nil
}

// readReply reads one reply. An error means there was no (well-formed)
// reply: the session is then broken.
func (s *session) readReply(ctx context.Context, op string, timeout time.Duration) (int, string, *Error) {
	s.tls.SetReadDeadline(time.Now().Add(timeout))
	s.limit.left = maxReplyBytes
	code, text, err := s.r.ReadResponse(0)
	if err != nil {
		s.broken = true
		return 0, "", newError(ctx, op, err)
	}
	return code, text, nil
}

// replyError turns a reply into an *Error. A 421 means the server is
// closing the connection, so the session is broken.
func (s *session) replyError(ctx context.Context, op string, code int, text string) *Error {
	if code == 421 {
		s.broken = true
	}
	e := newError(ctx, op, replyError(&textproto.Error{Code: code, Msg: text}))
	if code/100 != 4 && code/100 != 5 {
		s.broken = true
		e.Err = fmt.Errorf("unexpected reply %d to %s", code, strings.ToUpper(op))
	}
	return e
}

// quit says goodbye without waiting long for the courtesy reply.
func (s *session) quitTransactions() {
	s.tls.SetDeadline(time.Now().Add(quitTimeout))
	s.w.WriteString("QUIT\r\n")
	if s.w.Flush() != nil {
		return
	}
	s.limit.left = maxReplyBytes
	s.r.ReadResponse(221)
}

// dotWriter dot-stuffs a message body into w as textproto's DotWriter
// does (lines starting with a dot get another, a bare LF or CR becomes CRLF,
// Close ends the data with CRLF.CRLF), but a run of ordinary bytes at a
// time rather than byte by byte.
type dotWriter struct {
	w     *bufio.Writer
	state int
}

const (
	dotBegin     = iota // nothing written yet
	dotBeginLine        // just after LF
	dotData             // inside a line
	dotCR               // just after CR
)

func (d *dotWriter) Write(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		switch d.state {
		case dotBegin, dotBeginLine:
			d.state = dotData
			if b[n] == '.' {
				d.w.WriteByte('.')
			}
		case dotCR:
			d.w.WriteByte('\n')
			d.state = dotBeginLine
			if b[n] == '\n' {
				n++
			}
			// A bare CR ends its line too, as a bare LF does: some servers
			// take it for a line end, and what follows must then be
			// dot-stuffed as a new line ("\r.\r\n" would end the data
			// there). Bodies are refused at submission for bare CRs, so
			// this is a second line of defence.
			continue
		}
		// In a line: copy up to the next CR or LF as is.
		rest := b[n:]
		i := indexCRLF(rest)
		if i < 0 {
			if _, err := d.w.Write(rest); err != nil {
				return n, err
			}
			return len(b), nil
		}
		if _, err := d.w.Write(rest[:i]); err != nil {
			return n, err
		}
		if rest[i] == '\r' {
			d.state = dotCR
			d.w.WriteByte('\r')
		} else {
			d.state = dotBeginLine
			if _, err := d.w.WriteString("\r\n"); err != nil {
				return n, err
			}
		}
		n += i + 1
	}
	return n, nil
}

// indexCRLF finds the first CR or LF. Two vectorised searches beat one
// byte loop even though the second may scan past the first's hit.
func indexCRLF(b []byte) int {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return bytes.IndexByte(b, '\r')
	}
	if j := bytes.IndexByte(b[:i], '\r'); j >= 0 {
		return j
	}
	return i
}

// Close ends the data: the last line gets its CRLF, then the dot.
func (d *dotWriter) Close() error {
	switch d.state {
	case dotBeginLine:
		d.w.WriteString(".\r\n")
	case dotCR:
		d.w.WriteString("\n.\r\n")
	default:
		d.w.WriteString("\r\n.\r\n")
	}
	return nil
}
