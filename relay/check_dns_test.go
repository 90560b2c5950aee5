package relay

import (
	"context"
	"net"
	"strings"
	"testing"

	"sealpost/certs"
)

// fakeResolver answers from maps; a name missing from all of them is
// NXDOMAIN, a name in fail is a SERVFAIL.
type fakeResolver struct {
	txt  map[string][]string
	ips  map[string][]string
	ptr  map[string][]string
	fail map[string]bool
}

func nxdomain(name string) error {
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (r *fakeResolver) LookupTXT(_ context.Context, name string) ([]string, error) {
	name = strings.TrimSuffix(name, ".")
	if r.fail[name] {
		return nil, &net.DNSError{Err: "server misbehaving", Name: name, IsTemporary: true}
	}
	if v, ok := r.txt[name]; ok {
		return v, nil
	}
	return nil, nxdomain(name)
}

func (r *fakeResolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	return nil, nxdomain(name)
}

func (r *fakeResolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	host = strings.TrimSuffix(host, ".")
	v, ok := r.ips[host]
	if !ok {
		return nil, nxdomain(host)
	}
	var out []net.IPAddr
	for _, s := range v {
		out = append(out, net.IPAddr{IP: net.ParseIP(s)})
	}
	return out, nil
}

func (r *fakeResolver) LookupAddr(_ context.Context, addr string) ([]string, error) {
	if v, ok := r.ptr[addr]; ok {
		return v, nil
	}
	return nil, nxdomain(addr)
}

// goodDNS publishes everything right for the fixture's key.
func goodDNS(t *testing.T) *fakeResolver {
	t.Helper()
	rec, err := certs.DKIMRecord(testRSAKey(t).Public())
	if err != nil {
		t.Fatal(err)
	}
	return &fakeResolver{
		txt: map[string][]string{
			"s2026._domainkey.example.com": {rec},
			"example.com":                  {"google-site-verification=abc", "v=spf1 ip4:192.0.2.0/24 include:_spf.provider.test -all"},
			"_spf.provider.test":           {"v=spf1 ip4:198.51.100.0/24 ip6:2001:db8::/32 ~all"},
			"_dmarc.example.com":           {"v=DMARC1; p=reject; rua=mailto:dmarc@example.com"},
		},
		ips: map[string][]string{"app01.example.com": {"192.0.2.25"}},
		ptr: map[string][]string{"192.0.2.25": {"app01.example.com."}},
	}
}

func TestCheckDNS(t *testing.T) {
	t.Parallel()
	rec, err := certs.DKIMRecord(testRSAKey(t).Public())
	if err != nil {
		t.Fatal(err)
	}
	other, err := certs.GenerateDKIMKey("ed25519", 0)
	if err != nil {
		t.Fatal(err)
	}
	otherRec, _ := certs.DKIMRecord(other.Public())

	tests := []struct {
		name     string
		dns      func(r *fakeResolver)
		fixture  func(f *checkFixture)
		id       string
		status   Status
		contains string
	}{
		{name: "dkim matches", dns: func(r *fakeResolver) {
			// Split into 255-byte strings and joined back, as DNS serves it.
			r.txt["s2026._domainkey.example.com"] = []string{strings.Join(certs.SplitTXT(rec), "")}
		}, id: "dns.dkim", status: StatusPass, contains: "matches"},
		{name: "dkim rotated key not published", dns: func(r *fakeResolver) { r.txt["s2026._domainkey.example.com"] = []string{otherRec} },
			id: "dns.dkim", status: StatusFail, contains: "does not match"},
		{name: "dkim revoked", dns: func(r *fakeResolver) { r.txt["s2026._domainkey.example.com"] = []string{"v=DKIM1; p="} },
			id: "dns.dkim", status: StatusFail, contains: "revoked"},
		{name: "dkim missing", dns: func(r *fakeResolver) { delete(r.txt, "s2026._domainkey.example.com") },
			id: "dns.dkim", status: StatusFail, contains: "IN TXT"},
		{name: "dkim lookup fails", dns: func(r *fakeResolver) { r.fail = map[string]bool{"s2026._domainkey.example.com": true} },
			id: "dns.dkim", status: StatusWarn, contains: "lookup failed"},
		{name: "spf good", id: "dns.spf", status: StatusPass, contains: "ends in -all"},
		{name: "spf missing", dns: func(r *fakeResolver) { r.txt["example.com"] = []string{"other"} },
			id: "dns.spf", status: StatusFail, contains: "no SPF record"},
		{name: "spf twice", dns: func(r *fakeResolver) { r.txt["example.com"] = []string{"v=spf1 -all", "v=spf1 mx -all"} },
			id: "dns.spf", status: StatusFail, contains: "2 SPF records"},
		{name: "spf unparseable", dns: func(r *fakeResolver) { r.txt["example.com"] = []string{"v=spf1 ip4:192.0.2.0/99 -all"} },
			id: "dns.spf", status: StatusFail, contains: "does not evaluate"},
		{name: "spf plus all", dns: func(r *fakeResolver) { r.txt["example.com"] = []string{"v=spf1 +all"} },
			id: "dns.spf", status: StatusFail, contains: "every host"},
		{name: "spf neutral", dns: func(r *fakeResolver) { r.txt["example.com"] = []string{"v=spf1 ip4:192.0.2.0/24 ?all"} },
			id: "dns.spf", status: StatusWarn, contains: "neither"},
		{name: "spf softfail", dns: func(r *fakeResolver) { r.txt["example.com"] = []string{"v=spf1 ip4:192.0.2.0/24 ~all"} },
			id: "dns.spf", status: StatusPass, contains: "~all"},
		{name: "spf passes for upstream_ips", fixture: func(f *checkFixture) {
			f.sections += "[check]\nupstream_ips = [\"198.51.100.7\", \"2001:db8::7\"]\n"
		}, id: "dns.spf.upstream", status: StatusPass, contains: "198.51.100.7, 2001:db8::7"},
		{name: "spf fails for upstream_ips", fixture: func(f *checkFixture) {
			f.sections += "[check]\nupstream_ips = [\"203.0.113.9\"]\n"
		}, id: "dns.spf.upstream", status: StatusFail, contains: "gives fail for 203.0.113.9"},
		{name: "upstream ips unknown", id: "dns.spf.upstream", status: StatusWarn, contains: "check.upstream_ips"},
		{name: "provider include present", fixture: func(f *checkFixture) { f.upstream = "smtp.gmail.com:587" }, dns: func(r *fakeResolver) {
			r.txt["example.com"] = []string{"v=spf1 include:_spf.google.com -all"}
			r.txt["_spf.google.com"] = []string{"v=spf1 include:_netblocks.google.com ~all"}
			r.txt["_netblocks.google.com"] = []string{"v=spf1 ip4:35.190.247.0/24 ip6:2001:4860:4000::/36 ~all"}
		}, id: "dns.spf.upstream", status: StatusPass, contains: "Google's SPF include:_spf.google.com"},
		{name: "provider include missing", fixture: func(f *checkFixture) { f.upstream = "smtp.gmail.com:587" }, dns: func(r *fakeResolver) {
			r.txt["_spf.google.com"] = []string{"v=spf1 ip4:35.190.247.0/24 ~all"}
		}, id: "dns.spf.upstream", status: StatusWarn, contains: "add include:_spf.google.com"},
		{name: "dmarc reject", id: "dns.dmarc", status: StatusPass, contains: "p=reject"},
		{name: "dmarc none", dns: func(r *fakeResolver) { r.txt["_dmarc.example.com"] = []string{"v=DMARC1; p=none"} },
			id: "dns.dmarc", status: StatusWarn, contains: "p=none"},
		{name: "dmarc missing", dns: func(r *fakeResolver) { delete(r.txt, "_dmarc.example.com") },
			id: "dns.dmarc", status: StatusWarn, contains: "no DMARC record"},
		{name: "fcrdns", id: "dns.fcrdns", status: StatusPass, contains: "192.0.2.25"},
		{name: "fcrdns mismatch", dns: func(r *fakeResolver) { r.ptr["192.0.2.25"] = []string{"host-25.isp.example."} },
			id: "dns.fcrdns", status: StatusWarn, contains: "PTR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newCheckFixture(t)
			if tt.fixture != nil {
				tt.fixture(f)
			}
			cfg := f.load(t)
			res := goodDNS(t)
			if tt.dns != nil {
				tt.dns(res)
			}
			r := runCheck(t, cfg, CheckOptions{DNS: true, Resolver: res})
			want(t, r, tt.id, tt.status, tt.contains)
		})
	}
}

func TestSendingDomains(t *testing.T) {
	t.Parallel()
	c := &checker{cfg: &Config{
		DKIM:   DKIMConfig{Keys: []DKIMKey{{Domain: "example.com"}}},
		Policy: PolicyConfig{AllowedFromDomains: []string{"example.com", "*.example.com", "example.org"}, AllowedSenders: []string{"cron@app.example.net", "*@*.example.com"}},
	}}
	got := strings.Join(c.sendingDomains(), " ")
	if got != "app.example.net example.com example.org" {
		t.Errorf("sendingDomains = %q", got)
	}
}
