package policy

import (
	"bufio"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// messagesDir holds the attack and edge-case corpus shared with the
// end-to-end tests.
const messagesDir = "../testdata/messages"

// checkMessage runs a whole message through the checks in the order relay
// applies them: the line checker under everything, ReadHeader, CheckHeader,
// then the rest of the body through the line checker.
func checkMessage(r io.Reader, smtputf8 bool) (*Header, error) {
	br := bufio.NewReader(NewLineChecker(r))
	h, err := ReadHeader(br, HeaderOptions{SMTPUTF8: smtputf8})
	if err != nil {
		return nil, err
	}
	if v := CheckHeader(h); v != nil {
		return h, v
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return h, err
	}
	return h, nil
}

type fixture struct {
	file     string
	smtputf8 bool
	want     string
}

func readIndex(t testing.TB) []fixture {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(messagesDir, "index.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	var fs []fixture
	for i, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cols := strings.Split(line, "\t")
		if len(cols) != 3 || (cols[1] != "0" && cols[1] != "1") {
			t.Fatalf("index.tsv:%d: want file<TAB>0|1<TAB>rule, got %q", i+1, line)
		}
		fs = append(fs, fixture{cols[0], cols[1] == "1", cols[2]})
	}
	return fs
}

func TestMessageFixtures(t *testing.T) {
	t.Parallel()
	index := readIndex(t)
	listed := make(map[string]bool)
	for _, f := range index {
		if listed[f.file] {
			t.Errorf("index.tsv lists %s twice", f.file)
		}
		listed[f.file] = true
	}
	entries, err := os.ReadDir(messagesDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "index.tsv" && !strings.HasPrefix(e.Name(), ".") && !listed[e.Name()] {
			t.Errorf("%s is not listed in index.tsv", e.Name())
		}
	}
	for _, fx := range index {
		t.Run(fx.file, func(t *testing.T) {
			t.Parallel()
			f, err := os.Open(filepath.Join(messagesDir, fx.file))
			if err != nil {
				t.Fatal(err) // listed but missing
			}
			defer f.Close()
			_, err = checkMessage(f, fx.smtputf8)
			got := "ok"
			var v *Violation
			switch {
			case errors.As(err, &v):
				got = v.Rule
			case err != nil:
				t.Fatalf("unexpected error: %v", err)
			}
			if got != fx.want {
				t.Fatalf("got %s (%v), want %s", got, err, fx.want)
			}
		})
	}
}

func headerOf(t testing.TB, lines ...string) *Header {
	t.Helper()
	h, err := readHeaderString(t, strings.Join(lines, "\r\n")+"\r\n\r\n", HeaderOptions{SMTPUTF8: true})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestCheckHeader(t *testing.T) {
	t.Parallel()
	from := "From: a@example.com"
	for _, tc := range []struct {
		name  string
		lines []string
		rule  string
		line  int
		msg   string
	}{
		{"minimal", []string{from}, "", 0, ""},
		{"duplicate subject", []string{from, "Subject: a", "X: y", "subject: b"}, RuleDuplicateField, 4,
			"duplicate Subject field (header injection?)"},
		{"duplicate MIME-Version", []string{from, "Mime-Version: 1.0", "MIME-Version: 1.0"}, RuleDuplicateField, 3,
			"duplicate MIME-Version field (header injection?)"},
		{"repeatable fields", []string{from, "Received: a", "Received: b", "Comments: a", "Comments: b", "Keywords: a", "Keywords: b", "Resent-To: a@b.example", "Resent-To: c@d.example"}, "", 0, ""},
		{"duplicate before bad address", []string{from, "From: b@example.com", "To: nonsense"}, RuleDuplicateField, 2, ""},
		{"bad address before duplicate", []string{from, "To: nonsense", "From: b@example.com"}, RuleAddressList, 2, "To field is not a valid address list"},
		{"empty To", []string{from, "To:  "}, RuleAddressList, 2, "To field is empty"},
		{"empty Cc", []string{from, "Cc:"}, RuleAddressList, 2, ""},
		{"empty Bcc", []string{from, "Bcc:"}, "", 0, ""},
		{"undisclosed To", []string{from, "To: undisclosed-recipients:;"}, "", 0, ""},
		{"undisclosed Cc with comment", []string{from, "Cc: undisclosed-recipients: ; (none)"}, "", 0, ""},
		{"group and mailbox", []string{from, "To: a@b.example, Team: c@d.example, e@f.example;"}, "", 0, ""},
		{"nested group", []string{from, "To: A: B: c@d.example;;"}, RuleAddressList, 2, ""},
		{"From group", []string{"From: Team: a@b.example;"}, "", 0, ""},
		{"From empty group", []string{"From: Team:;"}, RuleAddressList, 1, "From field names no mailbox"},
		{"From list", []string{"From: a@b.example, c@d.example", "Sender: a@b.example"}, "", 0, ""},
		{"two Senders in one", []string{from, "Sender: a@b.example, c@d.example"}, RuleAddressList, 2, ""},
		{"Reply-To unclosed", []string{from, "Reply-To: <a@b.example"}, RuleAddressList, 2, ""},
		{"UTF-8 display name", []string{"From: Jöran <a@b.example>"}, "", 0, ""},
		{"UTF-8 address", []string{"From: jöran@bü.example"}, "", 0, ""},
		{"encoded CRLF in name", []string{"From: =?utf-8?q?a=0D=0ABcc=3A_x=40y?= <a@b.example>"}, RuleHeaderInjection, 1, ""},
		{"encoded LF in To name", []string{from, "To: =?iso-8859-1?q?a=0Ab?= <a@b.example>"}, RuleHeaderInjection, 2, ""},
		{"encoded NUL in unknown charset", []string{"From: =?x-made-up?q?a=00b?= <a@b.example>"}, RuleHeaderInjection, 1, ""},
		{"encoded CRLF in Subject", []string{from, "Subject: =?utf-8?b?aGkNCkJjYzogeEB5?="}, RuleHeaderInjection, 2,
			"Subject field has an encoded word that decodes to a control character (header injection?)"},
		{"encoded CRLF in custom field", []string{from, "X-Note: =?utf-8?q?a=0Ab?="}, RuleHeaderInjection, 2,
			"a header field has an encoded word that decodes to a control character (header injection?)"},
		{"malformed encoded word is text", []string{from, "Subject: =?utf-8?q?broken"}, "", 0, ""},
		{"encoded second address", []string{"From: =?utf-8?q?boss=40corp=2Eexample=3E?= <x@evil.example>"}, RuleHeaderInjection, 1, ""},
		{"name with comma and at", []string{`From: "a@b.example, c" <a@b.example>`}, RuleHeaderInjection, 1, ""},
		{"name that is an address", []string{`From: "a@b.example" <a@b.example>`}, "", 0, ""},
		{"name with comma", []string{`From: "Doe, Jane" <a@b.example>`}, "", 0, ""},
		{"missing From", []string{"To: a@b.example"}, RuleMissingFrom, 0, "message has no From field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := CheckHeader(headerOf(t, tc.lines...))
			if tc.rule == "" {
				if v != nil {
					t.Fatalf("got %v", v)
				}
				return
			}
			if v == nil || v.Rule != tc.rule || v.Line != tc.line || (tc.msg != "" && v.Msg != tc.msg) {
				t.Fatalf("got %#v, want %s line %d %q", v, tc.rule, tc.line, tc.msg)
			}
		})
	}
}

func TestCheckHeaderEmpty(t *testing.T) {
	t.Parallel()
	if v := CheckHeader(&Header{}); v == nil || v.Rule != RuleMissingFrom {
		t.Fatalf("got %v", v)
	}
}

func TestFromAddresses(t *testing.T) {
	t.Parallel()
	as, err := FromAddresses(headerOf(t, `From: "Cron" <cron@App01.Example.com>, b@c.example`))
	if err != nil || len(as) != 2 || as[0].Name != "Cron" || as[0].Address != "cron@App01.Example.com" || as[1].Address != "b@c.example" {
		t.Fatalf("got %v, %v", as, err)
	}
	_, err = FromAddresses(headerOf(t, "To: a@b.example"))
	wantViolation(t, err, RuleMissingFrom, 0)
	_, err = FromAddresses(headerOf(t, "To: a@b.example", "From: nonsense"))
	wantViolation(t, err, RuleAddressList, 2)
}

func TestViolationError(t *testing.T) {
	t.Parallel()
	v := &Violation{Rule: RuleBareLF, Line: 3, Msg: "bare LF"}
	if v.Error() != "bare-lf: line 3: bare LF" {
		t.Errorf("Error() = %q", v.Error())
	}
	v.Line = 0
	if v.Error() != "bare-lf: bare LF" {
		t.Errorf("Error() = %q", v.Error())
	}
}
