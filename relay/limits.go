package relay

import (
	"fmt"
	"math"
	"time"

	"github.com/emersion/go-smtp"

	"sealpost/policy"
)

// limits holds the token buckets a submission draws from.
type limits struct {
	perSender, perClient, global *policy.Limiter
	// perUser counts by local user (the socket's peer uid, or the owner of
	// a loopback TCP client's socket): a program cannot dodge it by
	// changing its envelope sender.
	perUser *policy.Limiter
}

func newLimits(cfg LimitsConfig, clock policy.Clock) *limits {
	mk := func(rl RateLimit) *policy.Limiter {
		return policy.NewLimiter(policy.LimiterConfig{Rate: rl.Rate.perSecond(), Burst: rl.Burst}, clock)
	}
	return &limits{perSender: mk(cfg.PerSender), perClient: mk(cfg.PerClient), global: mk(cfg.Global), perUser: mk(cfg.PerUser)}
}

func (r Rate) perSecond() float64 {
	if r.Unlimited() {
		return 0
	}
	return float64(r.Events) / r.Per.Seconds()
}

// limitError is a refusal by a rate limit, with the rule for the audit log.
type limitError struct {
	rule  string
	reply *smtp.SMTPError
}

// allow draws one token for a message from every bucket that applies, the
// narrowest first. A message refused by one bucket has already used tokens
// of the ones before it; that errs on the side of the limit, which is what
// a runaway program needs. userKey is "" when the local user is unknown;
// per_user then does not apply.
func (l *limits) allow(senderKey, userKey, clientKey string) *limitError {
	checks := [...]struct {
		lim             *policy.Limiter
		key, rule, what string // what names the bucket in the refusal, before its key
	}{
		{l.perSender, senderKey, "rate-per-sender", "sender "},
		{l.perUser, userKey, "rate-per-user", "local user "},
		{l.perClient, clientKey, "rate-per-client", "client "},
		{l.global, "*", "rate-global", ""},
	}
	for _, c := range checks {
		if c.key == "" {
			continue
		}
		if ok, retry := c.lim.Allow(c.key); !ok {
			what := c.what + c.key
			if c.what == "" {
				what = "this host"
			}
			return &limitError{rule: c.rule, reply: &smtp.SMTPError{
				Code:         451,
				EnhancedCode: smtp.EnhancedCode{4, 7, 1},
				Message:      fmt.Sprintf("Rate limit exceeded for %s: try again in %s", what, roundUp(retry)),
			}}
		}
	}
	return nil
}

// roundUp shows a wait in whole seconds, never "0s".
func roundUp(d time.Duration) time.Duration {
	return time.Duration(math.Ceil(max(d.Seconds(), 1))) * time.Second
}
