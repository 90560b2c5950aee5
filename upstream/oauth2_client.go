package upstream

import (
	"context"
	"errors"
	"fmt"
)

// openRetryingToken opens a session with an OAuth2 access token. When the
// server refuses the token (XOAUTH2's error challenge then 535, or
// OAUTHBEARER's), the token is dropped from the cache and the connection is
// tried once more with a fresh one: tokens are revoked or expire early
// (password change, admin action) and one refresh settles that. A second
// refusal is a temporary failure that says so, so the operator looks at the
// grant and not at the network.
func (c *Client) openRetryingToken(ctx context.Context) (*session, error) {
	secret, err := c.loadSecret(ctx)
	if err != nil {
		return nil, err
	}
	s, err := c.open(ctx, secret)
	if err == nil || !errors.Is(err, ErrAuthRejected) {
		return s, err
	}
	if s != nil {
		s.quit()
		s.close()
	}
	c.cfg.TokenRefused(secret)
	if secret, err = c.loadSecret(ctx); err != nil {
		return nil, err
	}
	s, err = c.open(ctx, secret)
	var e *Error
	if err != nil && errors.Is(err, ErrAuthRejected) && errors.As(err, &e) {
		c.cfg.TokenRefused(secret)
		e.Err = fmt.Errorf("%w; a freshly obtained access token was refused too: check the grant's scopes and that SMTP AUTH is enabled for the mailbox", e.Err)
	}
	return s, err
}
