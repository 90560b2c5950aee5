package policy

import (
	"strings"
	"testing"
)

func TestValidatePattern(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"*", "*@example.com", "cron@app01.example.com", "*@*.example.com", "cron@*", "*@*", `"odd one"@example.com`} {
		if err := ValidatePattern(p); err != nil {
			t.Errorf("ValidatePattern(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"", "example.com", "cr*n@example.com", "*cron@example.com", "*@ex*ample.com", "*@example.*", "*@**.example.com",
		"*@", "@example.com", "a b@example.com", "*@[192.0.2.1]", "*@*.", "*@exa mple.com"} {
		if err := ValidatePattern(p); err == nil {
			t.Errorf("ValidatePattern(%q) accepted", p)
		}
	}
	for _, d := range []string{"example.com", "*.example.com"} {
		if err := ValidateFromDomain(d); err != nil {
			t.Errorf("ValidateFromDomain(%q) = %v", d, err)
		}
	}
	for _, d := range []string{"*", "", "*.", "a.*.com", "exa mple.com"} {
		if err := ValidateFromDomain(d); err == nil {
			t.Errorf("ValidateFromDomain(%q) accepted", d)
		}
	}
}

func TestCheckEnvelopeSender(t *testing.T) {
	t.Parallel()
	rules := SenderRules{AllowedSenders: []string{"*@example.com", "cron@app01.example.net", "*@*.corp.example"}}
	for _, tc := range []struct {
		addr string
		rule string
	}{
		{"", ""}, // bounces always pass
		{"anyone@example.com", ""},
		{"Anyone@EXAMPLE.com", ""},
		{"cron@app01.example.net", ""},
		{"CRON@App01.Example.Net", ""},
		{"root@app01.example.net", RuleSenderNotAllowed},
		{"a@host.corp.example", ""},
		{"a@deep.host.corp.example", ""},
		{"a@corp.example", RuleSenderNotAllowed},
		{"a@xcorp.example", RuleSenderNotAllowed},
		{"a@example.com.evil.example", RuleSenderNotAllowed},
		{"a@sub.example.com", RuleSenderNotAllowed},
		{"not an address", RuleEnvelopeAddress},
	} {
		v := rules.CheckEnvelopeSender(tc.addr)
		got := ""
		if v != nil {
			got = v.Rule
		}
		if got != tc.rule {
			t.Errorf("CheckEnvelopeSender(%q) = %v, want %q", tc.addr, v, tc.rule)
		}
	}
	if v := rules.CheckEnvelopeSender("root@app01.example.net"); v.Msg != "sender <root@app01.example.net> is not allowed to send through this host" {
		t.Errorf("Msg = %q", v.Msg)
	}
	for _, open := range []SenderRules{{}, {AllowedSenders: []string{"*"}}} {
		if v := open.CheckEnvelopeSender("x@anywhere.example"); v != nil {
			t.Errorf("%+v refused: %v", open, v)
		}
	}
}

func TestCheckFromDomains(t *testing.T) {
	t.Parallel()
	rules := SenderRules{SigningDomains: []string{"Example.com"}, AllowedFromDomains: []string{"partner.example", "*.corp.example"}}
	for _, tc := range []struct {
		from string
		rule string
		msg  string
	}{
		{"a@example.com", "", ""},
		{"A <a@EXAMPLE.COM>", "", ""},
		{"a@partner.example", "", ""},
		{"a@app.corp.example", "", ""},
		{"a@corp.example", RuleFromDomainNotAllowed, "From domain corp.example is not one this host may send for"},
		{"a@sub.example.com", RuleFromDomainNotAllowed, "From domain sub.example.com is not one this host may send for"},
		{"a@example.com, b@Evil.Example", RuleFromDomainNotAllowed, "From domain evil.example is not one this host may send for"},
		{`"a@example.com" <x@evil.example>`, RuleFromDomainNotAllowed, ""},
		{"Team: a@example.com, b@partner.example;", "", ""},
	} {
		h := headerOf(t, "To: x@y.example", "From: "+tc.from)
		v := rules.CheckFromDomains(h)
		got := ""
		if v != nil {
			got = v.Rule
		}
		if got != tc.rule || (tc.msg != "" && v.Msg != tc.msg) {
			t.Errorf("From: %s: got %v, want %s %q", tc.from, v, tc.rule, tc.msg)
		}
		if v != nil && v.Line != 2 {
			t.Errorf("From: %s: line %d, want 2", tc.from, v.Line)
		}
	}

	h := headerOf(t, "From: anyone@anywhere.example")
	if v := (SenderRules{AllowAnyFrom: true}).CheckFromDomains(h); v != nil {
		t.Errorf("AllowAnyFrom refused: %v", v)
	}
	v := (SenderRules{}).CheckFromDomains(h)
	if v == nil || v.Rule != RuleFromDomainNotAllowed || !strings.Contains(v.Msg, "no From domain is configured") {
		t.Errorf("empty rules: %v", v)
	}
	if v := (SenderRules{AllowedFromDomains: []string{"*"}}).CheckFromDomains(h); v == nil {
		t.Error(`"*" in AllowedFromDomains allowed any From; only AllowAnyFrom may`)
	}
	if v := rules.CheckFromDomains(headerOf(t, "To: a@example.com")); v == nil || v.Rule != RuleMissingFrom {
		t.Errorf("no From: %v", v)
	}
	if v := rules.CheckFromDomains(headerOf(t, "From: garbage")); v == nil || v.Rule != RuleAddressList {
		t.Errorf("bad From: %v", v)
	}
}
