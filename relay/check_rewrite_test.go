package relay

import (
	"testing"
)

// TestCheckRewrite: an account in one domain with mail From another warns
// unless From rewriting is on.
func TestCheckRewrite(t *testing.T) {
	t.Parallel()
	f := newCheckFixture(t)
	cfg := f.load(t)
	r := runCheck(t, cfg, CheckOptions{})
	want(t, r, "rewrite.from", StatusPass, "account's (example.com)")

	cfg.Policy.AllowedFromDomains = []string{"example.com", "shop.example.net"}
	cfg.Upstream.Provider = "microsoft365"
	r = runCheck(t, cfg, CheckOptions{})
	want(t, r, "rewrite.from", StatusWarn, "SendAsDenied")

	cfg.Rewrite.HeaderFrom = RewriteIfNotAllowed
	r = runCheck(t, cfg, CheckOptions{})
	want(t, r, "rewrite.from", StatusPass, "shop.example.net is rewritten")

	cfg.Rewrite.HeaderFrom = RewriteNever
	cfg.Rewrite.AllowedFrom = []string{"*@shop.example.net"}
	r = runCheck(t, cfg, CheckOptions{})
	want(t, r, "rewrite.from", StatusPass, "every From domain")
}
