package relay

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"sealpost/policy"
	"sealpost/upstream"
)

// checkRewrite warns when the upstream account and the From domains this
// host sends as can only work together with From rewriting: a mailbox
// provider (Microsoft 365: "SendAsDenied"; Gmail replaces or refuses a
// From the account may not use) accepts the account's own address and the
// aliases configured for it, not arbitrary domains.
func (c *checker) checkRewrite() {
	rw := c.cfg.Rewrite
	var fromDomains []string
	fromDomains = append(fromDomains, c.cfg.Policy.AllowedFromDomains...)
	for _, k := range c.cfg.DKIM.Keys {
		fromDomains = append(fromDomains, k.Domain)
	}
	for _, name := range c.cfg.UpstreamNames() {
		u, _ := c.cfg.UpstreamByName(name)
		_, accountDomain, err := policy.SplitAddress(u.Username)
		if err != nil {
			continue // an API-key login (SES, SendGrid, Postmark): no mailbox to match
		}
		var foreign []string
		for _, d := range fromDomains {
			if !strings.EqualFold(d, accountDomain) && !slices.Contains(foreign, d) && !allowedByRewrite(rw.AllowedFrom, d) {
				foreign = append(foreign, d)
			}
		}
		subject := "upstream " + name
		switch {
		case len(foreign) == 0:
			c.pass("rewrite.from", subject, "every From domain is the account's ("+accountDomain+")")
		case rw.HeaderFrom != RewriteNever:
			c.pass("rewrite.from", subject, fmt.Sprintf("From in %s is rewritten to the account (rewrite.header_from = %q)", strings.Join(foreign, ", "), rw.HeaderFrom))
		default:
			why := "the provider accepts only the account's address and its configured aliases"
			if u.Provider == "microsoft365" {
				why = "Microsoft 365 refuses a From that is not the authenticated mailbox (SendAsDenied) unless Send As is granted"
			}
			c.warn("rewrite.from", subject,
				fmt.Sprintf("account %s is in %s, but mail may be From %s: %s", u.Username, accountDomain, strings.Join(foreign, ", "), why),
				"set rewrite.header_from = \"if-not-allowed\" (list the aliases the account may use in rewrite.allowed_from), or make these addresses aliases of the account at the provider")
		}
	}
}

// allowedByRewrite reports whether rewrite.allowed_from covers a whole
// From domain ("*@domain").
func allowedByRewrite(patterns []string, domain string) bool {
	for _, p := range patterns {
		if strings.EqualFold(p, "*@"+domain) || p == "*" {
			return true
		}
	}
	return false
}

// checkOAuth2Secrets loads the client secret and refresh token sources
// (never showing them); fetching a token is left to check -live and to
// delivery.
func (c *checker) checkOAuth2Secrets(ctx context.Context, u UpstreamConfig) {
	o := u.OAuth2
	for _, s := range []struct {
		name string
		src  *upstream.SecretSource
	}{{"client secret", o.ClientSecret()}, {"refresh token", o.RefreshToken()}} {
		if s.src == nil {
			continue
		}
		src := *s.src
		src.CommandTimeout, src.Getenv = c.opts.Timeout, c.opts.Getenv
		if _, err := src.Load(ctx); err != nil {
			fix := "put it where the [upstream.oauth2] keys point"
			if s.name == "refresh token" {
				fix = "run `sealpost oauth2 login` (device-code flow) or obtain a refresh token as the README describes"
			}
			c.fail("secrets.source", "oauth2 "+s.name, err.Error(), fix)
			return
		}
	}
	c.pass("secrets.source", "oauth2", fmt.Sprintf("OAuth2 (%s flow) for %s: token endpoint %s; secret sources load", flowName(o.Flow), u.Username, o.TokenURL))
}

func flowName(f string) string {
	if f == "" {
		return upstream.FlowRefreshToken
	}
	return f
}
