package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sealpost/certs/certstest"
	"sealpost/upstream/upstreamtest"
)

// smtpDialogue sends raw bytes to the relay and returns every reply line,
// so a test controls exactly which line endings go on the wire.
func smtpDialogue(t *testing.T, addr string, steps []string) []string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	var replies []string
	readReply := func() {
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				replies = append(replies, "EOF")
				return
			}
			line = strings.TrimRight(line, "\r\n")
			replies = append(replies, line)
			if len(line) < 4 || line[3] != '-' {
				return
			}
		}
	}
	readReply() // greeting
	for _, step := range steps {
		if _, err := c.Write([]byte(step)); err != nil {
			break
		}
		readReply()
	}
	return replies
}

// TestSmugglingThroughServe sends each smuggling sequence with a second
// transaction hidden behind it. The relay must refuse the message and the
// upstream must never see a second (or any) message.
func TestSmugglingThroughServe(t *testing.T) {
	needSwaks(t)
	t.Parallel()
	up, setup := newTLSUpstream(t, upstreamtest.Options{})
	listen := freePort(t)
	d := startServe(t, setup.writeConfig(t, listen, up.Addr(), ""), listen)

	smuggled := "MAIL FROM:<ceo@example.com>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nFrom: ceo@example.com\r\nTo: victim@example.net\r\nSubject: wire the money\r\n\r\nsmuggled\r\n"
	for _, seq := range []string{"\n.\r\n", "\r\n.\n", "\n.\n", "\r.\r\n", "\r\n.\r", "\r.\n"} {
		t.Run(fmt.Sprintf("%q", seq), func(t *testing.T) {
			data := "From: app@example.com\r\nTo: ops@example.net\r\nSubject: report\r\n\r\nbody" + seq + smuggled + ".\r\n"
			replies := smtpDialogue(t, listen, []string{
				"EHLO client.test\r\n",
				"MAIL FROM:<app@example.com>\r\n",
				"RCPT TO:<ops@example.net>\r\n",
				"DATA\r\n",
				data,
				"QUIT\r\n",
			})
			final := replies[len(replies)-2]
			if !strings.HasPrefix(final, "554 5.6.0 ") {
				t.Errorf("reply to the smuggling message = %q, want 554 5.6.0\nall: %q", final, replies)
			}
		})
	}
	// A clean message afterwards proves the relay delivers at all, and that
	// nothing smuggled went before it.
	swaks(t, listen, "--from", "app@example.com", "--to", "ops@example.net", "--header", "Subject: clean")
	msgs := up.Expect(t, 1)
	d.stop(t)
	if len(up.Messages()) != 1 || !strings.Contains(string(msgs[0].Data), "Subject: clean") {
		t.Errorf("upstream received %d messages; want only the clean one", len(up.Messages()))
	}
	for _, m := range up.Messages() {
		if strings.Contains(string(m.Data), "wire the money") {
			t.Error("a smuggled message reached the upstream")
		}
	}
}

// TestInjectedMessageRefusedNothingQueued: a header injection gets 5xx
// naming the rule, and nothing reaches the spool.
func TestInjectedMessageRefusedNothingQueued(t *testing.T) {
	needSwaks(t)
	t.Parallel()
	setup := newSetup(t, certstest.NewCA(t).CertPEM())
	listen := freePort(t)
	down := freePort(t)
	d := startServe(t, setup.writeConfig(t, listen, down, ""), listen)
	host, port, _ := net.SplitHostPort(listen)
	out, err := runSwaks(host, port, "--from", "app@example.com", "--to", "ops@example.net",
		"--header", "Subject: contact form", "--add-header", "Subject: second subject")
	if err == nil || !strings.Contains(out, "550 5.6.0 ") || !strings.Contains(out, "duplicate-field") {
		t.Errorf("swaks with a duplicate Subject: %v\n%s", err, out)
	}
	d.stop(t)
	for _, sub := range []string{"body", "queue"} {
		entries, _ := os.ReadDir(filepath.Join(setup.spoolDir, sub))
		if len(entries) != 0 {
			t.Errorf("%d entries in %s/ after a refused injection", len(entries), sub)
		}
	}
	if !strings.Contains(d.stderr.String(), `"rule":"duplicate-field"`) {
		t.Errorf("no audit record names the rule:\n%s", d.stderr)
	}
}
