package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/mail"
	"net/textproto"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"sealpost/relay"
)

// More sysexits(3) codes: the sendmail interface promises them, and
// programs like PHP, cron and mdadm act on them (75 means "try later").
const (
	exitDataErr     = 65 // the message was refused for what it contains
	exitNoUser      = 67 // a recipient was refused
	exitUnavailable = 69 // the relay refused us outright
	exitTempFail    = 75 // not sent this time; the caller should try again
	exitNoPerm      = 77 // the sender is not allowed
)

const sendmailUsage = `usage: sendmail [-t] [-i] [-f sender] [-F name] [-bm|-bp|-bs] [-v] [-o option] [-config FILE] [recipient …]
`

// sendmailOptions is a parsed sendmail command line.
type sendmailOptions struct {
	mode       byte // 'm' submit a message (default), 's' SMTP on stdin, 'p' list the queue, 'i' newaliases
	fromHeader bool // -t
	ignoreDots bool // -i, -oi: a lone "." does not end the message
	sender     string
	senderSet  bool // -f/-r given (possibly as "<>", the null sender)
	fullName   string
	verbose    bool
	config     string
	rcpts      []string
}

// parseSendmailArgs reads a sendmail command line the way getopt does
// (bundled letters, "-fADDR" or "-f ADDR"), and also finds options after
// recipients. Options that sendmail accepts but that mean nothing to a relay
// (-oem, -odb, -N, -R, -V, -X, -C, -L, -h, -B, …) are accepted and
// ignored; -X in particular never writes a file, which is what PHP mail()
// injection relied on.
func parseSendmailArgs(args []string) (*sendmailOptions, error) {
	o := &sendmailOptions{mode: 'm'}
	const withValue = "ABCFLNORVXbfhoprq"
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			o.rcpts = append(o.rcpts, args[i+1:]...)
			return o, nil
		case a == "-config" || a == "--config":
			if i+1 >= len(args) {
				return nil, errors.New("-config needs a file")
			}
			i++
			o.config = args[i]
			continue
		case strings.HasPrefix(a, "-config=") || strings.HasPrefix(a, "--config="):
			_, o.config, _ = strings.Cut(a, "=")
			continue
		case len(a) < 2 || a[0] != '-':
			o.rcpts = append(o.rcpts, a)
			continue
		}
		for j := 1; j < len(a); j++ {
			letter := a[j]
			var value string
			if strings.IndexByte(withValue, letter) >= 0 {
				switch {
				case j+1 < len(a):
					value = a[j+1:]
				case letter == 'q':
					// -q alone: sendmail's queue run; its time is optional.
				case i+1 < len(args):
					i++
					value = args[i]
				default:
					return nil, fmt.Errorf("option -%c needs a value", letter)
				}
				j = len(a)
			}
			if err := o.apply(letter, value); err != nil {
				return nil, err
			}
		}
	}
	return o, nil
}

func (o *sendmailOptions) apply(letter byte, value string) error {
	switch letter {
	case 't':
		o.fromHeader = true
	case 'i':
		o.ignoreDots = true
	case 'v':
		o.verbose = true
	case 'f', 'r':
		o.sender, o.senderSet = strings.TrimSpace(value), true
	case 'F':
		o.fullName = value
	case 'I':
		o.mode = 'i'
	case 'b':
		switch value {
		case "m", "s", "p", "i":
			o.mode = value[0]
		case "d", "D":
			return errors.New("-bd: the daemon is `sealpost serve`")
		default:
			return fmt.Errorf("-b%s is not supported (use -bm, -bs, -bp or -bi)", value)
		}
	case 'o':
		// -oi is the one -o option that changes what we do; sendmail
		// takes any other -oXvalue (-oem, -oee, -odb, -odq, …) and so do we.
		if value == "i" || value == "i=true" || value == "IgnoreDots" {
			o.ignoreDots = true
		}
	case 'B':
		switch strings.ToUpper(value) {
		case "7BIT", "8BITMIME", "BINARYMIME":
		default:
			return fmt.Errorf("-B %s: use 7BIT or 8BITMIME", value)
		}
	case 'q':
		return errors.New("-q: sealpost retries queued mail itself; `sealpost queue flush` retries now")
	case 'A', 'C', 'L', 'N', 'O', 'R', 'V', 'X', 'h', 'p', 'm', 'n', 'U', 'G':
		// Accepted for compatibility; nothing for a relay to do.
	default:
		return fmt.Errorf("unknown option -%c", letter)
	}
	return nil
}

// cmdSendmail is `sealpost sendmail` and the binary run as `sendmail`. It is
// only a client: the running daemon checks, limits, signs and queues the
// message through the same session code as an SMTP client gets, and knows
// from the socket who we are.
func cmdSendmail(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	o, err := parseSendmailArgs(args)
	if err != nil {
		fmt.Fprintf(stderr, "sendmail: %v\n%s", err, sendmailUsage)
		return exitUsage
	}
	switch o.mode {
	case 'i':
		return exitOK // newaliases: there are no aliases to rebuild
	case 'p':
		return cmdMailq(o.config, stdout, stderr)
	}
	socket, hostname, err := sendmailSettings(o.config)
	if err != nil {
		fmt.Fprintf(stderr, "sendmail: %v\n", err)
		return exitConfig
	}
	if o.mode == 's' {
		return proxySMTP(socket, stdin, stdout, stderr)
	}
	if len(o.rcpts) == 0 && !o.fromHeader {
		fmt.Fprintf(stderr, "sendmail: no recipients: name them on the command line or use -t\n%s", sendmailUsage)
		return exitUsage
	}
	msg, err := readMessage(stdin, !o.ignoreDots)
	if err != nil {
		fmt.Fprintf(stderr, "sendmail: %v; nothing was sent\n", err)
		if errors.Is(err, errMessageData) {
			return exitDataErr
		}
		return exitTempFail
	}
	defer msg.body.Close()
	env, err := buildEnvelope(o, msg, hostname)
	if err != nil {
		fmt.Fprintf(stderr, "sendmail: %v; nothing was sent\n", err)
		if errors.Is(err, errNoRecipients) {
			return exitUsage
		}
		return exitDataErr
	}
	return submitToDaemon(socket, env, msg, o.verbose, stderr)
}

// sendmailSettings finds the daemon's socket and this host's mail name.
// Programs that call sendmail run as any user, and the configuration may
// be readable only by the daemon: the default file not existing or not
// readable means the default socket, while a file named with -config or
// $SEALPOST_CONFIG must load.
func sendmailSettings(flagValue string) (socket, hostname string, err error) {
	path := configPath(flagValue)
	named := path != relay.DefaultConfigPath
	cfg, err := relay.LoadConfig(path)
	switch {
	case err == nil:
		if cfg.Listen.Socket == "" {
			return "", "", fmt.Errorf("%s: listen.socket is empty, so the daemon takes no local submissions: set it (default %s)", path, relay.Defaults().Listen.Socket)
		}
		return cfg.Listen.Socket, cfg.Hostname, nil
	case !named && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission)):
		hostname, _ = os.Hostname()
		return relay.Defaults().Listen.Socket, hostname, nil
	}
	return "", "", err
}

var (
	errMessageData  = errors.New("refused")
	errNoRecipients = errors.New("no recipients")
)

// inputMessage is the submission read from stdin: the header fields (needed for
// -t and to add a From), then the rest, already in CRLF form.
type inputMessage struct {
	header   []string // one entry per field, continuation lines joined with CRLF
	endsHead bool     // an empty line ended the header (and was consumed)
	body     *spillBuffer
	hasFrom  bool
	utf8     bool // 8-bit bytes in the header
}

// maxHeaderBytes bounds what is held in memory for the header; the body
// goes to a temporary file once large.
const maxHeaderBytes = 1 << 20

// readMessage reads the whole message before anything is sent, so a
// program that writes slowly (cron streams a job's output as it runs)
// cannot run into the daemon's timeouts. LF and CRLF both end a line and
// become CRLF; a CR anywhere else is kept as it is, so the daemon sees and
// refuses it (a stray CR is how header injection through PHP mail() works).
// With dotEnds, a line of a single "." ends the message, as in sendmail
// without -i.
func readMessage(stdin io.Reader, dotEnds bool) (*inputMessage, error) {
	lr := &lineReader{r: bufio.NewReaderSize(stdin, 64<<10), dotEnds: dotEnds}
	m := &inputMessage{body: &spillBuffer{}}
	first, inHeader, headerBytes := true, true, 0
	for inHeader {
		line, ok, err := lr.line()
		if err != nil {
			return nil, err
		}
		if !ok {
			return m, nil
		}
		if first && strings.HasPrefix(line, "From ") {
			first = false // an mbox separator some programs write; not a field
			continue
		}
		first = false
		headerBytes += len(line) + 2
		if headerBytes > maxHeaderBytes {
			return nil, fmt.Errorf("%w: the header is longer than %d bytes", errMessageData, maxHeaderBytes)
		}
		switch {
		case line == "":
			m.endsHead, inHeader = true, false
		case (line[0] == ' ' || line[0] == '\t') && len(m.header) > 0:
			m.header[len(m.header)-1] += "\r\n" + line
		case isFieldStart(line):
			m.header = append(m.header, line)
		default:
			// Not a header line: it starts the body, or it is a malformed
			// line the daemon will judge. Either way it goes on unchanged.
			inHeader = false
			if _, err := m.body.Write([]byte(line + "\r\n")); err != nil {
				return nil, err
			}
		}
	}
	for _, f := range m.header {
		if name, _, _ := strings.Cut(f, ":"); strings.EqualFold(strings.TrimSpace(name), "From") {
			m.hasFrom = true
		}
		for i := 0; i < len(f); i++ {
			if f[i] >= 0x80 {
				m.utf8 = true
			}
		}
	}
	if err := lr.copyRest(m.body); err != nil {
		return nil, err
	}
	return m, nil
}

// isFieldStart reports whether line begins a header field: a name of
// printable characters, then a colon.
func isFieldStart(line string) bool {
	i := strings.IndexByte(line, ':')
	if i <= 0 {
		return false
	}
	for _, c := range []byte(strings.TrimRight(line[:i], " \t")) {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// lineReader splits stdin into lines ended by LF or CRLF.
type lineReader struct {
	r       *bufio.Reader
	dotEnds bool
	done    bool
}

// line returns the next line without its ending; ok is false at the end.
func (lr *lineReader) line() (string, bool, error) {
	if lr.done {
		return "", false, nil
	}
	var b []byte
	for {
		chunk, err := lr.r.ReadSlice('\n')
		b = append(b, chunk...)
		if len(b) > maxHeaderBytes {
			return "", false, fmt.Errorf("%w: a header line is longer than %d bytes", errMessageData, maxHeaderBytes)
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			lr.done = true
			if len(b) == 0 {
				return "", false, nil
			}
		case err != nil:
			return "", false, fmt.Errorf("read the message from standard input: %w", err)
		}
		break
	}
	s := strings.TrimSuffix(string(b), "\n")
	s = strings.TrimSuffix(s, "\r")
	if lr.dotEnds && s == "." {
		lr.done = true
		return "", false, nil
	}
	return s, true, nil
}

// copyRest writes the rest of the input to w with CRLF line endings,
// streaming: a body may be large and one line may be long.
func (lr *lineReader) copyRest(w io.Writer) error {
	atStart, heldCR := true, false
	var data []byte
	for !lr.done {
		chunk, err := lr.r.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read the message from standard input: %w", err)
		}
		eof := errors.Is(err, io.EOF)
		lr.done = eof
		full := len(chunk) > 0 && chunk[len(chunk)-1] == '\n'
		if atStart && full && lr.dotEnds {
			if s := string(chunk); s == ".\n" || s == ".\r\n" {
				lr.done = true
				break
			}
		}
		// A CR that ended the previous piece belongs to this one: with an
		// LF after it, it is a line ending; otherwise a stray CR that stays.
		data = data[:0]
		if heldCR {
			data = append(data, '\r')
			heldCR = false
		}
		data = append(data, chunk...)
		switch {
		case full:
			data = bytes.TrimSuffix(data[:len(data)-1], []byte("\r"))
			data = append(data, '\r', '\n')
		case eof && len(data) > 0:
			// A last line without its ending.
			data = append(bytes.TrimSuffix(data, []byte("\r")), '\r', '\n')
		case len(data) > 0 && data[len(data)-1] == '\r':
			heldCR, data = true, data[:len(data)-1]
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
		atStart = full
	}
	return nil
}

// spillBuffer holds the body in memory and moves it to an unlinked
// temporary file once it is large, so a big message does not need as much
// memory.
type spillBuffer struct {
	mem  bytes.Buffer
	file *os.File
}

const spillAt = 1 << 20

func (b *spillBuffer) Write(p []byte) (int, error) {
	if b.file == nil && b.mem.Len()+len(p) > spillAt {
		f, err := os.CreateTemp("", "sealpost-sendmail-")
		if err != nil {
			return 0, fmt.Errorf("keep the message while it is read: %w", err)
		}
		os.Remove(f.Name()) // nothing to clean up however we exit
		if _, err := f.Write(b.mem.Bytes()); err != nil {
			f.Close()
			return 0, fmt.Errorf("keep the message while it is read: %w", err)
		}
		b.mem.Reset()
		b.file = f
	}
	if b.file != nil {
		n, err := b.file.Write(p)
		if err != nil {
			err = fmt.Errorf("keep the message while it is read: %w", err)
		}
		return n, err
	}
	return b.mem.Write(p)
}

// reader returns the body from its start.
func (b *spillBuffer) reader() (io.Reader, error) {
	if b.file == nil {
		return bytes.NewReader(b.mem.Bytes()), nil
	}
	if _, err := b.file.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return b.file, nil
}

func (b *spillBuffer) Close() error {
	if b.file != nil {
		return b.file.Close()
	}
	return nil
}

// submission is what goes in MAIL FROM and RCPT TO, and the From field to
// add when the message has none.
type submission struct {
	from      string
	rcpts     []string
	fromField string // "" when the message has a From
}

// buildEnvelope gathers the recipients (the command line, plus To, Cc and
// Bcc with -t; the daemon removes Bcc) and the sender. Names without a
// domain ("root", as cron writes) get this host's name, as sendmail does.
func buildEnvelope(o *sendmailOptions, m *inputMessage, hostname string) (*submission, error) {
	env := &submission{}
	seen := map[string]bool{}
	add := func(addrs []string) {
		for _, a := range addrs {
			a = qualify(a, hostname)
			if k := strings.ToLower(a); !seen[k] {
				seen[k] = true
				env.rcpts = append(env.rcpts, a)
			}
		}
	}
	for _, arg := range o.rcpts {
		addrs, err := parseAddrs(arg)
		if err != nil {
			return nil, fmt.Errorf("%w: recipient %q: %v", errMessageData, arg, err)
		}
		add(addrs)
	}
	if o.fromHeader {
		for _, f := range m.header {
			name, value, _ := strings.Cut(f, ":")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "to", "cc", "bcc":
			default:
				continue
			}
			addrs, err := parseAddrs(strings.ReplaceAll(value, "\r\n", ""))
			if err != nil {
				return nil, fmt.Errorf("%w: the %s field: %v", errMessageData, strings.TrimSpace(name), err)
			}
			add(addrs)
		}
	}
	if len(env.rcpts) == 0 {
		return nil, fmt.Errorf("%w: none on the command line and none in To, Cc or Bcc", errNoRecipients)
	}

	login := currentLogin()
	switch {
	case o.senderSet && (o.sender == "" || o.sender == "<>"):
		env.from = "" // the null sender, for bounces and auto-replies
	case o.senderSet:
		addrs, err := parseAddrs(o.sender)
		if err != nil || len(addrs) != 1 {
			return nil, fmt.Errorf("%w: sender %q is not one address", errMessageData, o.sender)
		}
		env.from = qualify(addrs[0], hostname)
	default:
		env.from = qualify(login.name, hostname)
	}
	if !m.hasFrom {
		addr := env.from
		if addr == "" {
			addr = qualify(login.name, hostname)
		}
		name := o.fullName
		if name == "" {
			name = login.fullName
		}
		env.fromField = "From: " + (&mail.Address{Name: name, Address: addr}).String()
	}
	return env, nil
}

type loginInfo struct{ name, fullName string }

// currentLogin is who runs us, for a sender the caller did not give.
func currentLogin() loginInfo {
	u, err := user.Current()
	if err != nil {
		return loginInfo{name: "uid" + fmt.Sprint(os.Getuid())}
	}
	full, _, _ := strings.Cut(u.Name, ",") // GECOS: "Full Name,room,phone"
	return loginInfo{name: u.Username, fullName: full}
}

func qualify(addr, hostname string) string {
	if addr == "" || strings.Contains(addr, "@") || hostname == "" {
		return addr
	}
	return addr + "@" + hostname
}

// parseAddrs reads an address list as found in To or on a command line:
// "a@x, Name <b@y>", and also the bare local names ("root") that net/mail
// refuses. It never guesses: anything else is an error.
func parseAddrs(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	if list, err := mail.ParseAddressList(s); err == nil {
		out := make([]string, len(list))
		for i, a := range list {
			out[i] = a.Address
		}
		return out, nil
	}
	var out []string
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if a, err := mail.ParseAddress(part); err == nil {
			out = append(out, a.Address)
			continue
		}
		local := part
		if i := strings.LastIndexByte(part, '<'); i >= 0 && strings.HasSuffix(part, ">") {
			local = part[i+1 : len(part)-1]
		}
		if !isLocalName(local) {
			return nil, fmt.Errorf("cannot parse %q as an address", part)
		}
		out = append(out, local)
	}
	return out, nil
}

func isLocalName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(".-_+=", c) >= 0) {
			return false
		}
	}
	return true
}

// dialDaemon connects to the daemon's socket, or explains why not.
func dialDaemon(socket string) (net.Conn, error) {
	c, err := net.DialTimeout("unix", socket, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the sealpost daemon at %s (is `sealpost serve` running?): %w", socket, err)
	}
	return c, nil
}

// submitToDaemon hands the message to the daemon and maps its replies to sysexits
// the way sendmail does:
//
//	could not connect, or any 4xx reply      75 EX_TEMPFAIL (try again later)
//	5xx greeting (refused at connect)        69 EX_UNAVAILABLE
//	5xx to MAIL FROM, 5.7.x (not allowed)    77 EX_NOPERM
//	5xx to MAIL FROM, otherwise (syntax)     65 EX_DATAERR
//	5xx to any RCPT TO                       67 EX_NOUSER (nothing is sent to anyone)
//	5xx to DATA or after the message         65 EX_DATAERR
//
// The daemon's reply is printed on stderr, so the caller's log says why.
func submitToDaemon(socket string, env *submission, m *inputMessage, verbose bool, stderr io.Writer) int {
	conn, err := dialDaemon(socket)
	if err != nil {
		fmt.Fprintf(stderr, "sendmail: %v; the message was not sent\n", err)
		return exitTempFail
	}
	_ = conn.SetDeadline(time.Now().Add(15 * time.Minute))
	c := smtp.NewClient(conn)
	defer c.Close()
	if verbose {
		c.DebugWriter = stderr
	}
	fail := func(stage string, err error, permanent int) int {
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			fmt.Fprintf(stderr, "sendmail: %s: %v; the message was not sent\n", stage, err)
			return exitTempFail
		}
		fmt.Fprintf(stderr, "sendmail: %s refused: %d %d.%d.%d %s\n", stage, se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
		if se.Code >= 500 && se.Code < 600 {
			return permanent
		}
		return exitTempFail
	}
	if err := c.Hello("localhost"); err != nil {
		return fail("the connection", err, exitUnavailable)
	}
	opts := &smtp.MailOptions{UTF8: m.utf8 || !isASCIIString(env.from) || !allASCIIStrings(env.rcpts)}
	if err := c.Mail(env.from, opts); err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) && se.EnhancedCode[1] == 7 {
			return fail("sender <"+env.from+">", err, exitNoPerm)
		}
		return fail("sender <"+env.from+">", err, exitDataErr)
	}
	for _, rcpt := range env.rcpts {
		if err := c.Rcpt(rcpt, nil); err != nil {
			// All or nothing: a caller told of a failure sends again, and
			// the recipients accepted so far would get it twice.
			return fail("recipient <"+rcpt+">", err, exitNoUser)
		}
	}
	w, err := c.Data()
	if err != nil {
		return fail("the message", err, exitDataErr)
	}
	body, err := m.body.reader()
	if err != nil {
		fmt.Fprintf(stderr, "sendmail: read back the message: %v; it was not sent\n", err)
		return exitTempFail
	}
	if err := writeMessage(w, env, m, body); err != nil {
		// The daemon refuses a broken line ending as soon as it sees it,
		// and hangs up: its reply, not our failed write, says why.
		if reply := lateReply(conn); reply != nil {
			return fail("the message", reply, exitDataErr)
		}
		return fail("the message", err, exitDataErr)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return fail("the message", err, exitDataErr)
	}
	if verbose {
		fmt.Fprintf(stderr, "sendmail: accepted: %s\n", resp.StatusText)
	}
	_ = c.Quit()
	return exitOK
}

// lateReply reads a reply the daemon sent while we were still writing
// the message; nil when there is none.
func lateReply(conn net.Conn) *smtp.SMTPError {
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	code, msg, err := textproto.NewReader(bufio.NewReader(conn)).ReadResponse(0)
	if code == 0 || (err != nil && !errors.As(err, new(*textproto.Error))) {
		return nil
	}
	se := &smtp.SMTPError{Code: code, Message: msg}
	var a, b, c int
	if n, _ := fmt.Sscanf(msg, "%d.%d.%d ", &a, &b, &c); n == 3 {
		se.EnhancedCode = smtp.EnhancedCode{a, b, c}
		_, se.Message, _ = strings.Cut(msg, " ")
	}
	return se
}

func writeMessage(w io.Writer, env *submission, m *inputMessage, body io.Reader) error {
	bw := bufio.NewWriterSize(w, 32<<10)
	if env.fromField != "" {
		bw.WriteString(env.fromField + "\r\n")
	}
	for _, f := range m.header {
		bw.WriteString(f + "\r\n")
	}
	if m.endsHead || (len(m.header) == 0 && env.fromField != "") {
		bw.WriteString("\r\n")
	}
	if _, err := bw.ReadFrom(body); err != nil {
		return err
	}
	return bw.Flush()
}

func isASCIIString(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func allASCIIStrings(ss []string) bool {
	for _, s := range ss {
		if !isASCIIString(s) {
			return false
		}
	}
	return true
}

// proxySMTP is -bs: an SMTP session on stdin and stdout, carried to the
// daemon unchanged, so the client talks to the real relay (and the daemon
// still knows which local user it is).
func proxySMTP(socket string, stdin io.Reader, stdout, stderr io.Writer) int {
	conn, err := dialDaemon(socket)
	if err != nil {
		fmt.Fprintf(stderr, "sendmail: %v\n", err)
		return exitTempFail
	}
	defer conn.Close()
	go func() {
		_, _ = io.Copy(conn, stdin)
		// The client is done talking; the daemon may still answer.
		if uc, ok := conn.(*net.UnixConn); ok {
			_ = uc.CloseWrite()
		}
	}()
	// The session ends when the daemon hangs up (after QUIT, an error or
	// its timeout); the copy from stdin is then abandoned, as stdin may
	// never end.
	if _, err := io.Copy(stdout, conn); err != nil {
		fmt.Fprintf(stderr, "sendmail: the session with the daemon ended: %v\n", err)
		return exitTempFail
	}
	return exitOK
}

// cmdMailq is `mailq` and `sendmail -bp`: the queue listing.
func cmdMailq(config string, stdout, stderr io.Writer) int {
	args := []string{"list"}
	if config != "" {
		args = append(args, "-config", config)
	}
	return cmdQueue(args, stdout, stderr)
}
