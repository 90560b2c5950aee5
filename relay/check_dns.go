package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"blitiri.com.ar/go/spf"

	"sealpost/certs"
)

// Resolver is the DNS the checks need. *net.Resolver satisfies it; tests
// pass a fake. It is the SPF library's resolver interface, so the SPF
// evaluation asks the same (fake) DNS as the other checks.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

var _ spf.DNSResolver = Resolver(nil)

func (c *checker) checkDNS(ctx context.Context) {
	for _, k := range c.cfg.DKIM.Keys {
		c.checkDKIMRecord(ctx, k)
	}
	domains := c.sendingDomains()
	ips, source := c.upstreamIPs(ctx)
	for _, d := range domains {
		c.checkSPF(ctx, d, ips, source)
		c.checkDMARC(ctx, d)
	}
	c.checkFCrDNS(ctx)
}

// notFound reports a definite "no such record" as opposed to a failure to
// ask (no network, SERVFAIL), which the checks report as a WARN.
func notFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

func (c *checker) lookupTXT(ctx context.Context, name string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	return c.opts.Resolver.LookupTXT(ctx, name)
}

const dnsRetryFix = "check that this host can resolve names (or run check where it can), then run it again"

func (c *checker) checkDKIMRecord(ctx context.Context, k DKIMKey) {
	name := certs.DKIMRecordName(k.Selector, k.Domain)
	signer, err := certs.LoadDKIMKey(k.KeyFile)
	if err != nil {
		c.warn("dns.dkim", name, "the key could not be loaded (see dkim.key), so the record was not compared", "")
		return
	}
	want, err := certs.DKIMRecord(signer.Public())
	if err != nil {
		c.fail("dns.dkim", name, err.Error(), "")
		return
	}
	publish := "publish: " + certs.ZoneLine(k.Selector, k.Domain, want) + " (sealpost dkim records prints it)"
	txts, err := c.lookupTXT(ctx, name)
	switch {
	case notFound(err) || err == nil && len(txts) == 0:
		c.fail("dns.dkim", name, "no TXT record: receivers cannot verify the signatures, which then count as failing", publish)
		return
	case err != nil:
		c.warn("dns.dkim", name, "lookup failed: "+err.Error(), dnsRetryFix)
		return
	}
	wantP := dkimTag(want, "p")
	var seen []string
	for _, txt := range txts {
		p := dkimTag(txt, "p")
		if p == wantP {
			c.pass("dns.dkim", name, "the published key matches "+k.KeyFile)
			return
		}
		if p == "" {
			seen = append(seen, "a revoked key (empty p=)")
		} else {
			seen = append(seen, "p="+abbrev(p))
		}
	}
	c.fail("dns.dkim", name, fmt.Sprintf("the record does not match %s (want p=%s, DNS has %s): every signature with this key fails, typically after a key rotation", k.KeyFile, abbrev(wantP), strings.Join(seen, ", ")), publish)
}

// dkimTag returns the value of tag in a DKIM record (white space inside
// values, as long records are often split, removed).
func dkimTag(record, tag string) string {
	for _, part := range strings.Split(record, ";") {
		name, value, ok := strings.Cut(part, "=")
		if ok && strings.TrimSpace(name) == tag {
			return strings.Join(strings.Fields(value), "")
		}
	}
	return ""
}

func abbrev(s string) string {
	if len(s) <= 24 {
		return s
	}
	return s[:12] + "…" + s[len(s)-8:]
}

// sendingDomains are the domains mail leaves as: those with DKIM keys,
// the listed From domains and the domains of the envelope sender patterns
// (wildcards, which name no single domain, left out).
func (c *checker) sendingDomains() []string {
	var ds []string
	add := func(d string) {
		d = strings.ToLower(strings.TrimSuffix(d, "."))
		if d != "" && !strings.Contains(d, "*") && !slices.Contains(ds, d) {
			ds = append(ds, d)
		}
	}
	for _, k := range c.cfg.DKIM.Keys {
		add(k.Domain)
	}
	for _, d := range c.cfg.Policy.AllowedFromDomains {
		add(d)
	}
	for _, p := range c.cfg.Policy.AllowedSenders {
		if _, d, ok := strings.Cut(p, "@"); ok {
			add(d)
		}
	}
	slices.Sort(ds)
	return ds
}

// providers maps well-known submission hosts to the SPF include their
// customers publish. Only providers that send with the customer's own
// envelope sender are listed: for the others SPF is checked on the
// provider's bounce domain, not on ours.
var providers = []struct{ hostSuffix, include, name string }{
	{".gmail.com", "_spf.google.com", "Google"},
	{".googlemail.com", "_spf.google.com", "Google"},
	{".office365.com", "spf.protection.outlook.com", "Microsoft 365"},
	{".outlook.com", "spf.protection.outlook.com", "Microsoft 365"},
	{".fastmail.com", "spf.messagingengine.com", "Fastmail"},
	{".zoho.com", "zoho.com", "Zoho"},
	{".zoho.eu", "zoho.eu", "Zoho"},
}

// upstreamIPs returns the addresses the upstream sends from and how they
// were learnt: check.upstream_ips, else a sample of the known provider's
// SPF include.
func (c *checker) upstreamIPs(ctx context.Context) ([]netip.Addr, string) {
	if len(c.cfg.Check.UpstreamIPs) > 0 {
		var ips []netip.Addr
		for _, s := range c.cfg.Check.UpstreamIPs {
			if ip, err := netip.ParseAddr(s); err == nil {
				ips = append(ips, ip)
			}
		}
		return ips, "check.upstream_ips"
	}
	host := "." + strings.ToLower(strings.TrimSuffix(c.cfg.UpstreamHost(), "."))
	for _, p := range providers {
		if strings.HasSuffix(host, p.hostSuffix) {
			ips := c.spfSample(ctx, p.include)
			if len(ips) == 0 {
				return nil, ""
			}
			return ips, fmt.Sprintf("%s's SPF include:%s", p.name, p.include)
		}
	}
	return nil, ""
}

// spfSample follows an SPF record's include:s and redirect= (bounded) and
// returns the first IPv4 and first IPv6 address it authorises.
func (c *checker) spfSample(ctx context.Context, domain string) []netip.Addr {
	var v4, v6 netip.Addr
	queue, lookups := []string{domain}, 0
	for len(queue) > 0 && lookups < 10 && !(v4.IsValid() && v6.IsValid()) {
		d := queue[0]
		queue = queue[1:]
		lookups++
		txts, err := c.lookupTXT(ctx, d)
		if err != nil {
			continue
		}
		for _, txt := range txts {
			if !isSPF(txt) {
				continue
			}
			for _, term := range strings.Fields(txt)[1:] {
				term = strings.TrimLeft(term, "+")
				name, value, _ := strings.Cut(term, ":")
				switch strings.ToLower(name) {
				case "ip4", "ip6":
					value, _, _ = strings.Cut(value, "/")
					ip, err := netip.ParseAddr(value)
					if err != nil {
						continue
					}
					if ip.Is4() && !v4.IsValid() {
						v4 = ip
					} else if ip.Is6() && !v6.IsValid() {
						v6 = ip
					}
				case "include":
					queue = append(queue, value)
				}
				if r, ok := strings.CutPrefix(strings.ToLower(term), "redirect="); ok {
					queue = append(queue, r)
				}
			}
		}
	}
	var out []netip.Addr
	for _, ip := range []netip.Addr{v4, v6} {
		if ip.IsValid() {
			out = append(out, ip)
		}
	}
	return out
}

func isSPF(txt string) bool {
	f := strings.Fields(txt)
	return len(f) > 0 && strings.EqualFold(f[0], "v=spf1")
}

// spfProbeIP is from TEST-NET-1 (RFC 5737): no record authorises it, so
// evaluating for it walks the whole record and exposes any error in it.
var spfProbeIP = net.IPv4(192, 0, 2, 1)

func (c *checker) evalSPF(ctx context.Context, domain string, ip net.IP) (spf.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*c.opts.Timeout)
	defer cancel()
	return spf.CheckHostWithSender(ip, c.cfg.Hostname, "postmaster@"+domain,
		spf.WithResolver(c.opts.Resolver), spf.WithContext(ctx))
}

func (c *checker) checkSPF(ctx context.Context, domain string, ips []netip.Addr, source string) {
	txts, err := c.lookupTXT(ctx, domain)
	if err != nil && !notFound(err) {
		c.warn("dns.spf", domain, "lookup failed: "+err.Error(), dnsRetryFix)
		return
	}
	var records []string
	for _, t := range txts {
		if isSPF(t) {
			records = append(records, t)
		}
	}
	include := "include:<your provider's SPF domain>"
	if source != "" && source != "check.upstream_ips" {
		include = source[strings.LastIndex(source, " ")+1:]
	}
	switch len(records) {
	case 0:
		c.fail("dns.spf", domain, "no SPF record: receivers cannot tell your provider's servers from forgers",
			fmt.Sprintf("publish %s. IN TXT \"v=spf1 %s -all\"", domain, include))
		return
	case 1:
	default:
		c.fail("dns.spf", domain, fmt.Sprintf("%d SPF records: RFC 7208 makes that a permanent error, so SPF fails for all mail", len(records)),
			"merge them into one v=spf1 record")
		return
	}
	record := records[0]
	if res, err := c.evalSPF(ctx, domain, spfProbeIP); res == spf.PermError {
		c.fail("dns.spf", domain, fmt.Sprintf("%q does not evaluate: %v", record, err),
			"fix the record (at most 10 DNS-querying terms, valid syntax); test it with an SPF checker")
		return
	} else if res == spf.TempError {
		c.warn("dns.spf", domain, fmt.Sprintf("%q: evaluation hit a temporary DNS error: %v", record, err), dnsRetryFix)
		return
	}

	switch all := spfAll(record); all {
	case "-all", "~all":
		c.pass("dns.spf", domain, fmt.Sprintf("%q, ends in %s", record, all))
	case "redirect":
		c.pass("dns.spf", domain, fmt.Sprintf("%q, policy delegated by redirect=", record))
	case "?all", "":
		c.warn("dns.spf", domain, fmt.Sprintf("%q ends neither in -all nor ~all: mail from anywhere gets neutral, not fail", record),
			"end the record with -all (or ~all while testing)")
	default: // +all, all
		c.fail("dns.spf", domain, fmt.Sprintf("%q ends in %s: it authorises every host on the Internet to send as %s", record, all, domain),
			"end the record with -all")
	}

	if len(ips) == 0 {
		c.warn("dns.spf.upstream", domain, "the upstream's sending addresses are unknown, so SPF was not evaluated for them",
			"list them in check.upstream_ips (your provider documents them)")
		return
	}
	status, fixAdd := StatusFail, "add "+include+" (or the addresses as ip4:/ip6:) to the SPF record of "+domain
	if source != "check.upstream_ips" {
		// Addresses inferred from a provider's published list: likely
		// right, but a guess, so not a reason to block go-live.
		status = StatusWarn
	}
	for _, ip := range ips {
		res, err := c.evalSPF(ctx, domain, net.IP(ip.AsSlice()))
		if res == spf.Pass {
			continue
		}
		found := fmt.Sprintf("SPF of %s gives %s for %s (from %s)", domain, res, ip, source)
		if err != nil && res != spf.Fail && res != spf.SoftFail {
			found += ": " + err.Error()
		}
		c.add("dns.spf.upstream", domain, status, found+": receivers may reject or spam-folder mail sent through the upstream", fixAdd)
		return
	}
	c.pass("dns.spf.upstream", domain, fmt.Sprintf("SPF passes for %s (from %s)", joinAddrs(ips), source))
}

func joinAddrs(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ", ")
}

// spfAll returns the record's final all mechanism with its qualifier
// ("-all"), "redirect" when a redirect= modifier decides instead, or "".
func spfAll(record string) string {
	redirect := false
	for _, term := range strings.Fields(record)[1:] {
		t := strings.ToLower(term)
		switch t {
		case "all", "+all", "-all", "~all", "?all":
			return t
		}
		if strings.HasPrefix(t, "redirect=") {
			redirect = true
		}
	}
	if redirect {
		return "redirect"
	}
	return ""
}

func (c *checker) checkDMARC(ctx context.Context, domain string) {
	name := "_dmarc." + domain
	record, at, err := c.findDMARC(ctx, domain)
	if err != nil {
		c.warn("dns.dmarc", domain, "lookup of "+name+" failed: "+err.Error(), dnsRetryFix)
		return
	}
	if record == "" {
		c.warn("dns.dmarc", domain, "no DMARC record at "+name+": Gmail and Yahoo require one of bulk senders, and without it spoofing of "+domain+" goes unreported",
			fmt.Sprintf("publish %s. IN TXT \"v=DMARC1; p=none; rua=mailto:dmarc@%s\" and tighten p= once reports look clean", name, domain))
		return
	}
	p := strings.ToLower(dkimTag(record, "p"))
	found := fmt.Sprintf("%s: %q, policy p=%s", at, record, p)
	if p == "none" {
		c.warn("dns.dmarc", domain, found+": failing mail is only reported, not refused",
			"once reports show all your mail passing, move to p=quarantine, then p=reject")
		return
	}
	c.pass("dns.dmarc", domain, found)
}

// findDMARC looks at _dmarc.domain, then at the organisational domain
// (approximated as the last two labels), as receivers do (RFC 7489 6.6.3).
func (c *checker) findDMARC(ctx context.Context, domain string) (record, at string, err error) {
	names := []string{"_dmarc." + domain}
	if labels := strings.Split(domain, "."); len(labels) > 2 {
		names = append(names, "_dmarc."+strings.Join(labels[len(labels)-2:], "."))
	}
	for _, name := range names {
		txts, err := c.lookupTXT(ctx, name)
		if err != nil && !notFound(err) {
			return "", "", err
		}
		for _, t := range txts {
			if f := strings.Fields(strings.ReplaceAll(t, ";", " ")); len(f) > 0 && strings.EqualFold(f[0], "v=DMARC1") {
				return t, name, nil
			}
		}
	}
	return "", "", nil
}

// checkFCrDNS: the upstream, not this host, talks to receivers, so a host
// name without matching forward and reverse DNS is only a hint; it shows
// in the Received: field and some filters score it.
func (c *checker) checkFCrDNS(ctx context.Context) {
	host := strings.TrimSuffix(c.cfg.Hostname, ".")
	ctx, cancel := context.WithTimeout(ctx, 2*c.opts.Timeout)
	defer cancel()
	fix := "give " + host + " an A/AAAA record whose address has a PTR record back to " + host + " (or set hostname to a name that has)"
	addrs, err := c.opts.Resolver.LookupIPAddr(ctx, host)
	if err != nil || len(addrs) == 0 {
		c.warn("dns.fcrdns", host, "the host name does not resolve", fix)
		return
	}
	for _, a := range addrs {
		names, err := c.opts.Resolver.LookupAddr(ctx, a.IP.String())
		if err != nil {
			continue
		}
		for _, n := range names {
			if strings.EqualFold(strings.TrimSuffix(n, "."), host) {
				c.pass("dns.fcrdns", host, fmt.Sprintf("%s → %s → %s", host, a.IP, host))
				return
			}
		}
	}
	c.warn("dns.fcrdns", host, fmt.Sprintf("no address of %s has a PTR record back to it (forward-confirmed reverse DNS)", host), fix)
}
