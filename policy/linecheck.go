package policy

import (
	"bytes"
	"io"
)

// NewLineChecker returns a reader that passes r's bytes through unchanged
// until it meets a bare LF (an LF not preceded by CR), a bare CR (a CR not
// followed by LF) or a NUL byte; it then returns a *Violation (not wrapped,
// so errors.As and a plain type assertion both work) and keeps returning it.
//
// Only CRLF may end a line. Everything that follows sealpost (the upstream,
// the recipients' servers) may treat a lone LF or CR as a line end, and
// go-smtp ends DATA only on CRLF.CRLF, so "\n.\r\n", "\r\n.\n", "\n.\n" and
// "\r.\r\n" inside DATA are where SMTP smuggling hides a second message.
// Refusing any bare CR or LF closes all of them at once without having to
// recognise each sequence.
//
// The bytes before the offending byte are returned before the violation, so
// a caller that copies the message somewhere sees a prefix of the input. A
// bare CR is noticed at the byte after it (or at EOF), so the CR itself is
// part of that prefix. Memory use is constant: the only state carried
// between reads is whether the last byte was a CR and the line number.
func NewLineChecker(r io.Reader) io.Reader {
	return &lineChecker{r: r, line: 1}
}

type lineChecker struct {
	r    io.Reader
	err  error // sticky once a violation is found
	line int   // 1-based line of the next byte
	cr   bool  // the last byte passed through was a CR awaiting its LF
}

func (c *lineChecker) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.r.Read(p)
	if k, v := c.scan(p[:n]); v != nil {
		c.err = v
		return k, v
	}
	if err == io.EOF && c.cr {
		c.err = bareCR(c.line)
		return n, c.err
	}
	return n, err
}

// scan checks b, which follows everything scanned before. On a violation it
// returns how many bytes of b precede the byte where it became evident.
//
// Lines are found with bytes.IndexByte, which is vectorised, and each line is
// searched once more for a CR: a well-formed line has exactly one, just
// before its LF. NULs are searched once per chunk for the same reason.
func (c *lineChecker) scan(b []byte) (int, *Violation) {
	i := 0
	if c.cr && len(b) > 0 {
		if b[0] != '\n' {
			return 0, bareCR(c.line)
		}
		c.cr = false
		c.line++
		i = 1
	}
	end := len(b)
	nul := bytes.IndexByte(b[i:], 0)
	if nul >= 0 {
		nul += i
		end = nul
	}
	for i < end {
		j := bytes.IndexByte(b[i:end], '\n')
		if j < 0 {
			r := bytes.IndexByte(b[i:end], '\r')
			if r < 0 {
				break
			}
			if i+r == len(b)-1 {
				// The LF may come in the next read.
				c.cr = true
				return len(b), nil
			}
			return i + r + 1, bareCR(c.line)
		}
		r := bytes.IndexByte(b[i:i+j], '\r')
		if r < 0 {
			return i + j, bareLF(c.line)
		}
		if r != j-1 {
			return i + r + 1, bareCR(c.line)
		}
		c.line++
		i += j + 1
	}
	if nul >= 0 {
		return nul, &Violation{Rule: RuleNULByte, Line: c.line, Msg: "NUL byte in message"}
	}
	return len(b), nil
}

func bareLF(line int) *Violation {
	return &Violation{Rule: RuleBareLF, Line: line, Msg: "bare LF in message: lines must end with CRLF"}
}

func bareCR(line int) *Violation {
	return &Violation{Rule: RuleBareCR, Line: line, Msg: "bare CR in message: lines must end with CRLF"}
}
