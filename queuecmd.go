package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"sealpost/relay"
	"sealpost/spool"
)

// exitQueueTempFail is EX_TEMPFAIL: the operation needs a running daemon
// (flush) or could not reach it; trying again later may work.
const exitQueueTempFail = 75

const queueUsage = `usage: sealpost queue [-config FILE] list [-json]
       sealpost queue [-config FILE] show [-json] [-body] ID
       sealpost queue [-config FILE] flush
       sealpost queue [-config FILE] delete ID
`

// cmdQueue is `sealpost queue`, also `mailq` and `sendmail -bp` (as
// cmdQueue([]string{"list"}, …)). list and show read the spool without
// locking it, so they work beside the running daemon; flush and delete ask
// the daemon over its control socket, and delete acts on the spool itself
// when no daemon runs.
func cmdQueue(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("queue", stderr)
	configFlag := fs.String("config", "", "configuration file")
	jsonOut := fs.Bool("json", false, "machine-readable output")
	withBody := fs.Bool("body", false, "show: print the whole message, not only its header")
	fs.Usage = func() { fmt.Fprint(stderr, queueUsage) }
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, queueUsage)
		return exitUsage
	}
	sub := fs.Arg(0)
	// Flags may also follow the subcommand: `queue list -json`.
	if err := fs.Parse(fs.Args()[1:]); err != nil {
		return exitUsage
	}
	rest := fs.Args()
	wantArgs := map[string]int{"list": 0, "flush": 0, "show": 1, "delete": 1}
	n, ok := wantArgs[sub]
	if !ok {
		fmt.Fprintf(stderr, "sealpost queue: unknown operation %q\n%s", sub, queueUsage)
		return exitUsage
	}
	if len(rest) != n {
		fmt.Fprintf(stderr, "sealpost queue %s: expected %d argument(s), got %q\n%s", sub, n, rest, queueUsage)
		return exitUsage
	}
	cfg, err := relay.LoadConfig(configPath(*configFlag))
	if err != nil {
		fmt.Fprintf(stderr, "sealpost: %v\n", err)
		return exitConfig
	}
	q := queueCmd{cfg: cfg, stdout: stdout, stderr: stderr, json: *jsonOut, now: time.Now()}
	switch sub {
	case "list":
		return q.list()
	case "show":
		return q.show(rest[0], *withBody)
	case "flush":
		return q.flush()
	default:
		return q.delete(rest[0])
	}
}

type queueCmd struct {
	cfg            *relay.Config
	stdout, stderr io.Writer
	json           bool
	now            time.Time
}

func (q queueCmd) openReadOnly() (*spool.Spool, error) {
	s, err := spool.Open(q.cfg.Spool.Dir, spool.Options{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("spool.dir %s (from %s): %w", q.cfg.Spool.Dir, q.cfg.Path, err)
	}
	return s, nil
}

// queueEntry is one message in `queue list -json` and `queue show -json`.
// Field names are stable: scripts rely on them.
type queueEntry struct {
	ID          string      `json:"id"`
	State       string      `json:"state"` // "queued" or "failed"
	AgeSeconds  int64       `json:"age_seconds"`
	Size        int64       `json:"size"`
	From        string      `json:"from"`
	Recipients  []queueRcpt `json:"recipients"`
	Attempts    int         `json:"attempts"`
	NextAttempt *time.Time  `json:"next_attempt,omitempty"`
	LastError   string      `json:"last_error,omitempty"`
	Created     time.Time   `json:"created"`
	Received    time.Time   `json:"received"`
	Client      string      `json:"client,omitempty"`
	AuthUser    string      `json:"auth_user,omitempty"`
	LocalUser   string      `json:"local_user,omitempty"`
	MessageID   string      `json:"message_id,omitempty"`
	Header      string      `json:"header,omitempty"` // show only
	Body        string      `json:"body,omitempty"`   // show -body only
}

type queueRcpt struct {
	Addr      string `json:"addr"`
	State     string `json:"state"`
	LastReply string `json:"last_reply,omitempty"`
}

func (q queueCmd) entry(m *spool.Message, failed bool) queueEntry {
	e := queueEntry{
		ID: string(m.ID), State: "queued", AgeSeconds: int64(q.now.Sub(m.Created).Seconds()), Size: m.Size,
		From: m.Envelope.From, Attempts: m.Attempts, LastError: m.LastError, Created: m.Created,
		Received: m.Envelope.Received, Client: m.Envelope.ClientAddr, AuthUser: m.Envelope.AuthUser,
		LocalUser: m.Envelope.LocalUser, MessageID: m.Envelope.MessageID,
	}
	if failed {
		e.State = "failed"
	} else {
		next := m.NextAttempt
		e.NextAttempt = &next
	}
	for _, r := range m.Rcpts {
		e.Recipients = append(e.Recipients, queueRcpt{Addr: r.Addr, State: string(r.State), LastReply: r.LastReply})
	}
	return e
}

func (q queueCmd) list() int {
	s, err := q.openReadOnly()
	if err != nil {
		fmt.Fprintf(q.stderr, "sealpost queue list: %v\n", err)
		return exitFailure
	}
	defer s.Close()
	// One write per line of a 100,000-message queue was most of the
	// listing's time.
	out := bufio.NewWriterSize(q.stdout, 64<<10)
	if q.json {
		err = q.writeListJSON(out, s)
	} else {
		err = q.writeList(out, s)
	}
	if ferr := out.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		fmt.Fprintf(q.stderr, "sealpost queue list: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// writeListJSON streams the queue as one JSON array, laid out as
// json.Encoder with SetIndent("", "  ") lays out the whole list, without
// holding the list: an entry is written as soon as it is read.
func (q queueCmd) writeListJSON(out io.Writer, s *spool.Spool) error {
	n := 0
	err := s.Walk(func(m *spool.Message) error {
		data, err := json.MarshalIndent(q.entry(m, false), "  ", "  ")
		if err != nil {
			return err
		}
		sep := ",\n  "
		if n == 0 {
			sep = "[\n  "
		}
		n++
		if _, err := io.WriteString(out, sep); err != nil {
			return err
		}
		_, err = out.Write(data)
		return err
	})
	if err != nil {
		return err
	}
	end := "\n]\n"
	if n == 0 {
		end = "[]\n"
	}
	_, err = io.WriteString(out, end)
	return err
}

// queueColumns are the columns of `queue list`.
var queueColumns = []string{"ID", "AGE", "SIZE", "FROM", "RECIPIENTS", "ATTEMPTS", "NEXT", "LAST ERROR"}

// writeList writes the queue as an aligned table. Only the table's cells
// are kept until the column widths are known, not the messages: a queue of
// 100,000 is listed in tens of megabytes, not hundreds.
func (q queueCmd) writeList(out io.Writer, s *spool.Spool) error {
	t := table{rows: [][]string{queueColumns}}
	var total int64
	err := s.Walk(func(m *spool.Message) error {
		e := q.entry(m, false)
		total += e.Size
		t.rows = append(t.rows, q.row(e))
		return nil
	})
	if err != nil {
		return err
	}
	if len(t.rows) == 1 {
		_, err := fmt.Fprintln(out, "Mail queue is empty")
		return err
	}
	if err := t.write(out); err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "-- %d message(s), %s\n", len(t.rows)-1, humanSize(total))
	return err
}

// row is a message's line in the `queue list` table, from the same entry
// that `queue list -json` prints.
func (q queueCmd) row(e queueEntry) []string {
	rcpts := make([]string, len(e.Recipients))
	for i, r := range e.Recipients {
		rcpts[i] = r.Addr + " (" + r.State + ")"
	}
	from := e.From
	if from == "" {
		from = "<>"
	}
	next := "now"
	if e.NextAttempt != nil && e.NextAttempt.After(q.now) {
		next = "in " + shortDuration(e.NextAttempt.Sub(q.now))
	}
	return []string{e.ID, shortDuration(time.Duration(e.AgeSeconds) * time.Second), humanSize(e.Size), from,
		strings.Join(rcpts, ", "), strconv.Itoa(e.Attempts), next, truncate(oneLineText(e.LastError), 80)}
}

// table aligns columns as text/tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
// does when every row has the same number of cells: each column but the
// last is padded to its widest cell (in runes) plus two spaces. tabwriter
// itself keeps a copy of every cell and line in its own buffers, which for
// a long queue is most of the listing's memory.
type table struct {
	rows [][]string
}

func (t *table) write(out io.Writer) error {
	if len(t.rows) == 0 {
		return nil
	}
	widths := make([]int, len(t.rows[0])-1)
	for _, row := range t.rows {
		for i := range widths {
			widths[i] = max(widths[i], utf8.RuneCountInString(row[i]))
		}
	}
	var line []byte
	for _, row := range t.rows {
		line = line[:0]
		for i, cell := range row {
			line = append(line, cell...)
			if i < len(widths) {
				for range widths[i] + 2 - utf8.RuneCountInString(cell) {
					line = append(line, ' ')
				}
			}
		}
		line = append(line, '\n')
		if _, err := out.Write(line); err != nil {
			return err
		}
	}
	return nil
}

func (q queueCmd) show(idArg string, withBody bool) int {
	id, err := spool.ParseID(idArg)
	if err != nil {
		fmt.Fprintf(q.stderr, "sealpost queue show: %v\n", err)
		return exitUsage
	}
	s, err := q.openReadOnly()
	if err != nil {
		fmt.Fprintf(q.stderr, "sealpost queue show: %v\n", err)
		return exitFailure
	}
	defer s.Close()
	m, body, failed, err := s.Lookup(id)
	if errors.Is(err, spool.ErrNotFound) {
		fmt.Fprintf(q.stderr, "sealpost queue show: no message %s in the queue or in failed/ (delivered messages leave no trace but the audit log)\n", id)
		return exitFailure
	}
	if err != nil {
		fmt.Fprintf(q.stderr, "sealpost queue show: %v\n", err)
		return exitFailure
	}
	defer body.Close()
	data, err := io.ReadAll(body)
	if errors.Is(err, spool.ErrNotFound) {
		fmt.Fprintf(q.stderr, "sealpost queue show: %s was delivered while it was being read (delivered messages leave no trace but the audit log)\n", id)
		return exitFailure
	}
	if err != nil {
		fmt.Fprintf(q.stderr, "sealpost queue show: reading %s: %v\n", id, err)
		return exitFailure
	}
	header, rest := splitHeader(data)
	e := q.entry(m, failed)
	e.Header = string(header)
	if withBody {
		e.Body = string(rest)
	}
	if q.json {
		enc := json.NewEncoder(q.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(e)
		return exitOK
	}
	w := q.stdout
	fmt.Fprintf(w, "Queue ID:     %s (%s)\n", e.ID, e.State)
	fmt.Fprintf(w, "Received:     %s (%s ago)\n", e.Received.Local().Format(time.RFC1123Z), shortDuration(time.Duration(e.AgeSeconds)*time.Second))
	fmt.Fprintf(w, "Size:         %s (%d bytes)\n", humanSize(e.Size), e.Size)
	from := e.From
	if from == "" {
		from = "<> (null sender: a bounce)"
	}
	fmt.Fprintf(w, "From:         %s\n", from)
	for _, what := range [][2]string{{"Client:", e.Client}, {"Auth user:", e.AuthUser}, {"Local user:", e.LocalUser}, {"Message-ID:", e.MessageID}} {
		if what[1] != "" {
			fmt.Fprintf(w, "%-13s %s\n", what[0], what[1])
		}
	}
	fmt.Fprintf(w, "Attempts:     %d\n", e.Attempts)
	if e.NextAttempt != nil {
		fmt.Fprintf(w, "Next attempt: %s\n", e.NextAttempt.Local().Format(time.RFC1123Z))
	}
	if e.LastError != "" {
		fmt.Fprintf(w, "Last error:   %s\n", oneLineText(e.LastError))
	}
	fmt.Fprintln(w, "Recipients:")
	for _, r := range e.Recipients {
		fmt.Fprintf(w, "  %-40s %s", r.Addr, r.State)
		if r.LastReply != "" {
			fmt.Fprintf(w, "  (%s)", oneLineText(r.LastReply))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
	w.Write(header)
	if withBody {
		fmt.Fprint(w, "\r\n")
		w.Write(rest)
	}
	return exitOK
}

func (q queueCmd) flush() int {
	path := q.cfg.ControlSocketPath()
	if path == "" {
		fmt.Fprintf(q.stderr, "sealpost queue flush: no control socket is configured (listen.control_socket in %s), so the daemon cannot be asked\n", q.cfg.Path)
		return exitQueueTempFail
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	rep, err := relay.Control(ctx, path, relay.ControlRequest{Op: "flush"})
	if errors.Is(err, relay.ErrNoDaemon) {
		fmt.Fprintf(q.stderr, "sealpost queue flush: no sealpost daemon is running (nothing answers on %s); queued mail is delivered when it starts\n", path)
		return exitQueueTempFail
	}
	if err == nil && !rep.OK {
		err = errors.New(rep.Error)
	}
	if err != nil {
		fmt.Fprintf(q.stderr, "sealpost queue flush: %v\n", err)
		return exitQueueTempFail
	}
	if rep.Loading {
		fmt.Fprintf(q.stdout, "flush requested: the daemon is still loading its queue after a restart (%d message(s) so far); all of it is retried as it loads\n", rep.Queued)
	} else {
		fmt.Fprintf(q.stdout, "flush requested: %d message(s) queued are being retried now\n", rep.Queued)
	}
	return exitOK
}

func (q queueCmd) delete(idArg string) int {
	id, err := spool.ParseID(idArg)
	if err != nil {
		fmt.Fprintf(q.stderr, "sealpost queue delete: %v\n", err)
		return exitUsage
	}
	path := q.cfg.ControlSocketPath()
	if path != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		rep, err := relay.Control(ctx, path, relay.ControlRequest{Op: "delete", ID: string(id)})
		switch {
		case err == nil && rep.OK:
			fmt.Fprintf(q.stdout, "deleted %s\n", id)
			return exitOK
		case err == nil && rep.NotFound:
			fmt.Fprintf(q.stderr, "sealpost queue delete: no queued message %s\n", id)
			return exitFailure
		case err == nil:
			fmt.Fprintf(q.stderr, "sealpost queue delete: the daemon refused: %s\n", rep.Error)
			return exitFailure
		case !errors.Is(err, relay.ErrNoDaemon):
			fmt.Fprintf(q.stderr, "sealpost queue delete: %v\n", err)
			return exitQueueTempFail
		}
	}
	return q.deleteDirect(id)
}

// deleteDirect deletes with no daemon running: taking the spool lock is
// what guarantees that none is (or starts meanwhile).
func (q queueCmd) deleteDirect(id spool.ID) int {
	logger := relay.NewLogger(q.stderr, q.cfg.Log).With(slog.String("log", "audit"))
	var env spool.Envelope
	s, err := spool.Open(q.cfg.Spool.Dir, spool.Options{Events: func(e spool.Event) {
		if e.Kind == spool.EventDeleted && e.ID == id {
			logger.Info("deleted", slog.String("event", "deleted"), slog.String("queue_id", string(id)),
				slog.String("mail_from", env.From), slog.Any("rcpt", env.To), slog.String("requested_by", "queue delete (no daemon)"))
		}
	}})
	if errors.Is(err, spool.ErrLocked) {
		fmt.Fprintf(q.stderr, "sealpost queue delete: a sealpost daemon holds the spool %s but does not answer on its control socket %q; try again, or check listen.control_socket\n", q.cfg.Spool.Dir, q.cfg.ControlSocketPath())
		return exitQueueTempFail
	}
	if err != nil {
		fmt.Fprintf(q.stderr, "sealpost queue delete: %v\n", err)
		return exitFailure
	}
	defer s.Close()
	if m, err := s.Get(id); err == nil {
		env = m.Envelope
	}
	if err := s.Delete(id); errors.Is(err, spool.ErrNotFound) {
		fmt.Fprintf(q.stderr, "sealpost queue delete: no queued message %s\n", id)
		return exitFailure
	} else if err != nil {
		fmt.Fprintf(q.stderr, "sealpost queue delete: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(q.stdout, "deleted %s\n", id)
	return exitOK
}

func splitHeader(msg []byte) (header, body []byte) {
	for _, sep := range []string{"\r\n\r\n", "\n\n"} {
		if i := strings.Index(string(msg), sep); i >= 0 {
			return msg[:i+len(sep)/2], msg[i+len(sep):]
		}
	}
	return msg, nil
}

func shortDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

func humanSize(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%dB", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
}

func oneLineText(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func truncate(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
