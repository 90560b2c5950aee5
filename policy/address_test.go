package policy

import (
	"strings"
	"testing"
)

func TestCheckEnvelopeAddress(t *testing.T) {
	t.Parallel()
	local64 := strings.Repeat("l", 64)
	label63 := strings.Repeat("d", 63)
	// 4 labels of 63 plus 3 dots: 255 octets.
	domain255 := strings.Join([]string{label63, label63, label63, label63[:61]}, ".") + ".x"
	for _, tc := range []struct {
		addr     string
		smtputf8 bool
		sender   bool
		ok       bool
	}{
		{"", false, true, true},
		{"", false, false, false},
		{"cron@app01.example.com", false, false, true},
		{"Cron.Daemon+tag@Example.COM", false, false, true},
		{"a!#$%&'*+-/=?^_`{|}~@example.com", false, false, true},
		{"user@localhost", false, false, true},
		{"user@[192.0.2.1]", false, false, true},
		{"user@[IPv6:2001:db8::1]", false, false, true},
		{"user@[ipv6:::ffff:192.0.2.1]", false, false, true},
		{`"john doe"@example.com`, false, false, true},
		{`"a\"b\\c@d"@example.com`, false, false, true},
		{`""@example.com`, false, false, true},
		{"jöran@bücher.example", true, false, true},
		{"jöran@bücher.example", false, false, false},
		{"user@bücher.example", false, false, false},
		{"\xff@example.com", true, false, false},
		{"root", false, false, false},
		{"@example.com", false, false, false},
		{"user@", false, false, false},
		{"user@@example.com", false, false, false},
		{"a@b@example.com", false, false, false},
		{".user@example.com", false, false, false},
		{"user.@example.com", false, false, false},
		{"us..er@example.com", false, false, false},
		{"us er@example.com", false, false, false},
		{"user@exa mple.com", false, false, false},
		{"user\r\n@example.com", false, false, false},
		{"user@example.com\r\nRCPT TO:<x@y>", false, false, false},
		{"user\x00@example.com", false, false, false},
		{"user\x7f@example.com", false, false, false},
		{"user\u0085@example.com", true, false, false},
		{`"a` + "\t" + `b"@example.com`, false, false, false},
		{`"a\` + "\x01" + `"@example.com`, false, false, false},
		{`"unterminated@example.com`, false, false, false},
		{`"a"b@example.com`, false, false, false},
		{"user@-example.com", false, false, false},
		{"user@example-.com", false, false, false},
		{"user@example..com", false, false, false},
		{"user@example.com.", false, false, false},
		{"user@ex_ample.com", false, false, false},
		{"user@[192.0.2.256]", false, false, false},
		{"user@[192.0.2.1", false, false, false},
		{"user@[2001:db8::1]", false, false, false},
		{"user@[IPv6:192.0.2.1]", false, false, false},
		{"user@[IPv6:fe80::1%eth0]", false, false, false},
		{"user@[x-tag:stuff]", false, false, false},
		{"@relay.example:user@example.com", false, false, false},
		{"<user@example.com>", false, false, false},
		{local64 + "@example.com", false, false, true},
		{local64 + "l@example.com", false, false, false},
		{"u@" + label63 + ".com", false, false, true},
		{"u@" + label63 + "d.com", false, false, false},
		{"u@" + domain255[:254-2], false, false, true},
		{"u@" + domain255, false, false, false}, // domain fits, path does not
	} {
		v := CheckEnvelopeAddress(tc.addr, tc.smtputf8, tc.sender)
		if (v == nil) != tc.ok {
			t.Errorf("CheckEnvelopeAddress(%q, smtputf8=%v, sender=%v) = %v, want ok=%v", tc.addr, tc.smtputf8, tc.sender, v, tc.ok)
		}
		if v != nil && v.Rule != RuleEnvelopeAddress {
			t.Errorf("%q: rule %s", tc.addr, v.Rule)
		}
	}
}

func TestCheckEnvelopeAddressMessages(t *testing.T) {
	t.Parallel()
	for addr, msg := range map[string]string{
		"us er@example.com":      "address has a space outside quotes",
		"user@exa mple.com":      "address has a space outside quotes",
		"user\n@example.com":     "address contains a control character",
		"jöran@example.com":      "non-ASCII address without SMTPUTF8",
		"root":                   "address has no domain",
		strings.Repeat("a", 300): "address is longer than 254 octets",
	} {
		if v := CheckEnvelopeAddress(addr, false, false); v == nil || v.Msg != msg {
			t.Errorf("%q: got %v, want %q", addr, v, msg)
		}
	}
}

func TestSplitAddress(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ addr, local, domain string }{
		{"Cron@App01.Example.COM", "Cron", "app01.example.com"},
		{`"A@B"@Example.com`, `"A@B"`, "example.com"},
		{"x@[IPv6:2001:DB8::1]", "x", "[ipv6:2001:db8::1]"},
		{"jöran@BÜCHER.example", "jöran", "bücher.example"},
	} {
		l, d, err := SplitAddress(tc.addr)
		if err != nil || l != tc.local || d != tc.domain {
			t.Errorf("SplitAddress(%q) = %q, %q, %v", tc.addr, l, d, err)
		}
	}
	for _, bad := range []string{"", "root", "a b@c.example"} {
		_, _, err := SplitAddress(bad)
		if v, ok := err.(*Violation); !ok || v.Rule != RuleEnvelopeAddress {
			t.Errorf("SplitAddress(%q) err = %v", bad, err)
		}
	}
}
