package upstream_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"sealpost/certs"
	"sealpost/certs/certstest"
	"sealpost/upstream"
)

// scriptServer is a small SMTP server over implicit TLS for dialogues
// upstreamtest's go-smtp server cannot produce: it can leave PIPELINING
// out of its EHLO (go-smtp always offers it), answer DATA with 354 when no
// recipient was accepted, and it records, for every command line, whether
// more of the client's bytes had already arrived with it. A client that
// waits for each reply never has bytes waiting; a pipelining one sends a
// group in one TLS record, so every line but the group's last has.
type scriptServer struct {
	t    *testing.T
	ca   *certs.CA
	ln   net.Listener
	opts scriptOpts

	mu         sync.Mutex
	conns      int
	lines      []scriptLine
	messages   []scriptMessage
	loneDots   int      // DATA sections that held nothing but the dot
	violations []string // commands sent ahead of a reply without PIPELINING
}

type scriptOpts struct {
	pipelining bool
	// Reply lines (without CRLF); empty means the usual success.
	rset, mail string
	rcpt       func(addr string) string
	// data answers the DATA command whatever the recipients; by default
	// 354, or 554 when no recipient was accepted.
	data string
	// hangUpAtData closes the connection on DATA without a reply.
	hangUpAtData bool
}

type scriptLine struct {
	conn     int
	line     string
	followed bool // more client bytes were already buffered after this line
}

type scriptMessage struct {
	from string
	to   []string
	data string // as on the wire, dot-stuffed, without the final dot line
}

func newScriptServer(t *testing.T, opts scriptOpts) *scriptServer {
	t.Helper()
	ca := certstest.NewCA(t)
	cert := certstest.Leaf(t, ca, serverName, "127.0.0.1")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptServer{t: t, ca: ca, ln: ln, opts: opts}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns++
			id := s.conns
			s.mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				s.serve(c, id)
			})
		}
	})
	return s
}

// config is a client configuration for the server: implicit TLS, AUTH
// PLAIN (any credentials pass).
func (s *scriptServer) config(t *testing.T) upstream.Config {
	t.Helper()
	tlsConfig, err := certs.ClientConfig(certs.ClientOptions{ServerName: serverName, ExtraRoots: s.ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	return upstream.Config{
		Addr: s.ln.Addr().String(), TLSMode: upstream.ModeImplicit, TLS: tlsConfig,
		Username: user, Secret: staticSecret(password),
		CommandTimeout: 10 * time.Second, DialTimeout: 5 * time.Second,
	}
}

func (s *scriptServer) serve(c net.Conn, id int) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	reply := func(lines ...string) bool {
		_, err := c.Write([]byte(strings.Join(lines, "\r\n") + "\r\n"))
		return err == nil
	}
	if !reply("220 script.test ESMTP") {
		return
	}
	var from string
	var to []string
	mailOK := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(line, "\r\n")
		followed := br.Buffered() > 0
		s.mu.Lock()
		s.lines = append(s.lines, scriptLine{conn: id, line: line, followed: followed})
		if followed && !s.opts.pipelining {
			s.violations = append(s.violations, line)
		}
		s.mu.Unlock()
		verb, arg, _ := strings.Cut(line, " ")
		var ok bool
		switch strings.ToUpper(verb) {
		case "EHLO":
			caps := []string{"250-script.test", "250-AUTH PLAIN", "250-SIZE 10000000"}
			if s.opts.pipelining {
				caps = append(caps, "250-PIPELINING")
			}
			ok = reply(append(caps, "250 8BITMIME")...)
		case "AUTH":
			ok = reply("235 2.7.0 Authenticated")
		case "RSET":
			from, to, mailOK = "", nil, false
			ok = reply(or(s.opts.rset, "250 2.0.0 Reset"))
			if strings.HasPrefix(s.opts.rset, "421") {
				return
			}
		case "NOOP":
			ok = reply("250 2.0.0 OK")
		case "MAIL":
			r := or(s.opts.mail, "250 2.1.0 OK")
			if mailOK = strings.HasPrefix(r, "250"); mailOK {
				from = strings.TrimSuffix(strings.TrimPrefix(strings.Fields(arg)[0], "FROM:<"), ">")
			}
			ok = reply(r)
		case "RCPT":
			addr := strings.TrimSuffix(strings.TrimPrefix(arg, "TO:<"), ">")
			r := "503 5.5.1 Error: need MAIL command"
			if mailOK {
				r = "250 2.1.5 OK"
				if s.opts.rcpt != nil {
					r = or(s.opts.rcpt(addr), r)
				}
			}
			if strings.HasPrefix(r, "250") {
				to = append(to, addr)
			}
			ok = reply(r)
		case "DATA":
			if s.opts.hangUpAtData {
				return
			}
			r := "354 End data with <CR><LF>.<CR><LF>"
			if len(to) == 0 {
				r = "554 5.5.1 Error: no valid recipients"
			}
			r = or(s.opts.data, r)
			if !reply(r) {
				return
			}
			if !strings.HasPrefix(r, "354") {
				ok = true
				break
			}
			data, complete := readData(br)
			if !complete {
				return
			}
			s.mu.Lock()
			switch {
			case data == "":
				s.loneDots++
			case len(to) > 0:
				s.messages = append(s.messages, scriptMessage{from: from, to: to, data: data})
			}
			s.mu.Unlock()
			if len(to) == 0 {
				// Postfix's answer to the lone dot of RFC 2920 section 3.1.
				ok = reply("554 5.5.1 Error: no valid recipients")
			} else {
				ok = reply("250 2.0.0 Ok: queued as S1")
			}
			from, to, mailOK = "", nil, false
		case "QUIT":
			reply("221 2.0.0 Bye")
			return
		default:
			ok = reply("502 5.5.2 Error: command not recognized")
		}
		if !ok {
			return
		}
	}
}

// readData reads up to the line holding only a dot.
func readData(br *bufio.Reader) (data string, complete bool) {
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return b.String(), false
		}
		if line == ".\r\n" {
			return b.String(), true
		}
		b.WriteString(line)
	}
}

func or(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

func (s *scriptServer) snapshot() (lines []scriptLine, messages []scriptMessage, loneDots int, violations []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]scriptLine(nil), s.lines...), append([]scriptMessage(nil), s.messages...), s.loneDots, append([]string(nil), s.violations...)
}

func (s *scriptServer) connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// transactionLines returns the lines of connection conn from its first
// MAIL or RSET on, as "VERB+" (followed by more bytes) or "VERB".
func (s *scriptServer) transactionLines(conn int) []string {
	lines, _, _, _ := s.snapshot()
	var out []string
	started := false
	for _, l := range lines {
		if l.conn != conn {
			continue
		}
		verb, _, _ := strings.Cut(l.line, " ")
		if verb == "MAIL" || verb == "RSET" {
			started = true
		}
		if !started || verb == "QUIT" {
			continue
		}
		if l.followed {
			verb += "+"
		}
		out = append(out, verb)
	}
	return out
}

func (m scriptMessage) String() string {
	return fmt.Sprintf("%s -> %v (%d bytes)", m.from, m.to, len(m.data))
}
