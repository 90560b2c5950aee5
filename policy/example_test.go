package policy_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"sealpost/policy"
)

// The order relay applies the message checks in at the end of DATA: every
// byte through the line checker, the header read and checked, the sender
// rules, the edits, then the header written back followed by the body.
func Example() {
	data := "From: cron@app01.example.com\r\nTo: ops@example.com\r\nBcc: audit@example.com\r\n\r\nBackup finished.\r\n"

	br := bufio.NewReader(policy.NewLineChecker(strings.NewReader(data)))
	h, err := policy.ReadHeader(br, policy.HeaderOptions{SMTPUTF8: false})
	var v *policy.Violation
	switch {
	case errors.As(err, &v):
		fmt.Println("refuse:", v.Rule, v.Line, v.Msg)
		return
	case err != nil:
		fmt.Println("temporary failure:", err)
		return
	}
	if v := policy.CheckHeader(h); v != nil {
		fmt.Println("refuse:", v.Rule, v.Msg)
		return
	}
	rules := policy.SenderRules{SigningDomains: []string{"app01.example.com"}}
	if v := rules.CheckFromDomains(h); v != nil {
		fmt.Println("refuse:", v.Rule, v.Msg)
		return
	}
	h.Del("Bcc")
	h.Prepend("Received", "from localhost by app01.example.com; Thu, 27 Nov 2025 11:00:00 +0000")
	var out strings.Builder // stands in for the spool
	h.WriteTo(&out)
	// The body still runs through the line checker: a bare LF there is
	// refused while it is copied to the spool.
	if _, err := io.Copy(&out, br); errors.As(err, &v) {
		fmt.Println("refuse:", v.Rule, v.Line, v.Msg)
		return
	}
	fmt.Print(strings.ReplaceAll(out.String(), "\r\n", "\n"))
	// Output:
	// Received: from localhost by app01.example.com; Thu, 27 Nov 2025 11:00:00 +0000
	// From: cron@app01.example.com
	// To: ops@example.com
	//
	// Backup finished.
}

func ExampleLimiter() {
	l := policy.NewLimiter(policy.LimiterConfig{Rate: 1, Burst: 2}, nil)
	key := strings.ToLower("Cron@App01.Example.com") // callers lowercase keys
	for range 3 {
		ok, retryAfter := l.Allow(key)
		fmt.Println(ok, retryAfter > 0)
	}
	// Output:
	// true false
	// true false
	// false true
}
