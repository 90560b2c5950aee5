package relay

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"sealpost/policy"
	"sealpost/upstream"
)

// DefaultUpstream is the name of [upstream] among the named upstreams, in
// routes, failover lists, metrics and audit records.
const DefaultUpstream = "default"

// OAuth2Config is [upstream.oauth2]: where access tokens for XOAUTH2 and
// OAUTHBEARER come from. The client secret and refresh token use the same
// kinds of source as the password (file, environment, command, systemd
// credential), each with its own prefix.
type OAuth2Config struct {
	// Flow is "refresh_token" (default: delegated access to the mailbox in
	// username) or "client_credentials" (app-only, Microsoft 365).
	Flow     string `toml:"flow"`
	TokenURL string `toml:"token_url"`
	// DeviceAuthURL is used only by `sealpost oauth2 login`.
	DeviceAuthURL string   `toml:"device_auth_url"`
	ClientID      string   `toml:"client_id"`
	Scopes        []string `toml:"scopes"`
	// Tenant is the Microsoft Entra tenant (ID or domain) the microsoft365
	// preset puts into the endpoint URLs; default "organizations", which
	// the client-credentials flow does not accept.
	Tenant string `toml:"tenant"`

	ClientSecretFile       string   `toml:"client_secret_file"`
	ClientSecretEnv        string   `toml:"client_secret_env"`
	ClientSecretCommand    []string `toml:"client_secret_command"`
	ClientSecretCredential string   `toml:"client_secret_credential"`

	RefreshTokenFile       string   `toml:"refresh_token_file"`
	RefreshTokenEnv        string   `toml:"refresh_token_env"`
	RefreshTokenCommand    []string `toml:"refresh_token_command"`
	RefreshTokenCredential string   `toml:"refresh_token_credential"`
}

// Set reports whether the table is used at all.
func (o OAuth2Config) Set() bool { return o.TokenURL != "" || o.ClientID != "" || o.Flow != "" }

// ClientSecret is the client secret's source, nil when none is set.
func (o OAuth2Config) ClientSecret() *upstream.SecretSource {
	s := upstream.SecretSource{File: o.ClientSecretFile, Env: o.ClientSecretEnv, Command: o.ClientSecretCommand, Credential: o.ClientSecretCredential}
	if s.Validate() == upstream.ErrNoSecretSource {
		return nil
	}
	return &s
}

// RefreshToken is the refresh token's source, nil when none is set.
func (o OAuth2Config) RefreshToken() *upstream.SecretSource {
	s := upstream.SecretSource{File: o.RefreshTokenFile, Env: o.RefreshTokenEnv, Command: o.RefreshTokenCommand, Credential: o.RefreshTokenCredential}
	if s.Validate() == upstream.ErrNoSecretSource {
		return nil
	}
	return &s
}

// RouteConfig is one [[routes]] entry: mail whose envelope sender matches
// Sender goes through Upstream. The first matching route wins; mail no
// route matches, and bounces (null sender), go through [upstream].
type RouteConfig struct {
	// Sender is a pattern as in policy.allowed_senders ("*@billing.example.com",
	// "cron@app01.example.com", "*@*.example.com").
	Sender   string `toml:"sender"`
	Upstream string `toml:"upstream"`
}

// RewriteConfig is [rewrite]: what sealpost changes so that a provider
// accepts mail (Microsoft 365 refuses a From that is not the authenticated
// mailbox, "SendAsDenied").
type RewriteConfig struct {
	// EnvelopeFrom, when set, is the MAIL FROM of every delivery: an
	// address, or "account" for the delivering upstream's username. The
	// queued envelope keeps the original, so bounces still reach the sender.
	EnvelopeFrom string `toml:"envelope_from"`
	// HeaderFrom is "never" (default), "if-not-allowed" or "always".
	HeaderFrom string `toml:"header_from"`
	// Address replaces the From address; default: the username of the
	// upstream the sender is routed to, when it is an address.
	Address string `toml:"address"`
	// AllowedFrom are the From addresses the upstream accepts as they are
	// (patterns as in policy.allowed_senders); with "if-not-allowed", a From
	// matching one, or equal to the account, is left alone.
	AllowedFrom []string `toml:"allowed_from"`
}

// Rewrite modes.
const (
	RewriteNever        = "never"
	RewriteIfNotAllowed = "if-not-allowed"
	RewriteAlways       = "always"
)

// UpstreamNames lists [upstream] ("default") and the named upstreams,
// sorted after the default.
func (c *Config) UpstreamNames() []string {
	names := []string{DefaultUpstream}
	for n := range c.Upstreams {
		names = append(names, n)
	}
	slices.Sort(names[1:])
	return names
}

// UpstreamByName returns [upstream] for "default", else [upstreams.NAME].
func (c *Config) UpstreamByName(name string) (UpstreamConfig, bool) {
	if name == DefaultUpstream {
		return c.Upstream, true
	}
	u, ok := c.Upstreams[name]
	return u, ok
}

// applyUpstreamDefaults gives each named upstream the defaults of
// [upstream] for the keys it leaves out, then applies every provider
// preset to the keys not set explicitly. It runs after decoding, when the
// metadata can tell an explicit key from a default.
func (c *Config) applyUpstreamDefaults(md toml.MetaData) error {
	def := Defaults().Upstream
	if err := applyPreset(&c.Upstream, "upstream", func(k ...string) bool { return md.IsDefined(append([]string{"upstream"}, k...)...) }); err != nil {
		return err
	}
	for name, u := range c.Upstreams {
		defined := func(k ...string) bool { return md.IsDefined(append([]string{"upstreams", name}, k...)...) }
		fillDefault := func(key string, set func()) {
			if !defined(key) {
				set()
			}
		}
		fillDefault("tls", func() { u.TLS = def.TLS })
		fillDefault("min_tls_version", func() { u.MinTLSVersion = def.MinTLSVersion })
		fillDefault("dial_timeout", func() { u.DialTimeout = def.DialTimeout })
		fillDefault("command_timeout", func() { u.CommandTimeout = def.CommandTimeout })
		fillDefault("max_connections", func() { u.MaxConnections = def.MaxConnections })
		fillDefault("max_messages_per_connection", func() { u.MaxMessagesPerConnection = def.MaxMessagesPerConnection })
		if err := applyPreset(&u, "upstreams."+name, defined); err != nil {
			return err
		}
		c.Upstreams[name] = u
	}
	return nil
}

// validateUpstreams checks what [upstream] and [upstreams.NAME] add to the
// original keys, the named upstreams in full, routes and rewriting.
func (c *Config) validateUpstreams() error {
	if err := validateUpstreamExtras("upstream", &c.Upstream, c); err != nil {
		return err
	}
	for _, name := range c.UpstreamNames()[1:] {
		u := c.Upstreams[name]
		prefix := "upstreams." + name
		if name == DefaultUpstream || !validSelector(name) {
			return fieldErr(prefix, "%q: upstream names are letters, digits, hyphens and dots, and %q is the name of [upstream]", name, DefaultUpstream)
		}
		if err := validateUpstreamBase(prefix, &u); err != nil {
			return err
		}
		if err := validateUpstreamExtras(prefix, &u, c); err != nil {
			return err
		}
		c.Upstreams[name] = u
	}
	for i, r := range c.Routes {
		key := fmt.Sprintf("routes[%d]", i)
		if err := policy.ValidatePattern(r.Sender); err != nil {
			return fieldErr(key+".sender", "%v", err)
		}
		if _, ok := c.UpstreamByName(r.Upstream); !ok {
			return fieldErr(key+".upstream", "%q is not an upstream: use %q or the NAME of an [upstreams.NAME]", r.Upstream, DefaultUpstream)
		}
	}

	rw := &c.Rewrite
	switch rw.HeaderFrom {
	case "":
		rw.HeaderFrom = RewriteNever
	case RewriteNever, RewriteIfNotAllowed, RewriteAlways:
	default:
		return fieldErr("rewrite.header_from", "%q: use %q, %q or %q", rw.HeaderFrom, RewriteNever, RewriteIfNotAllowed, RewriteAlways)
	}
	if a := rw.EnvelopeFrom; a != "" && a != "account" {
		if _, _, err := policy.SplitAddress(a); err != nil {
			return fieldErr("rewrite.envelope_from", "%q is not an address (or \"account\"): %v", a, err)
		}
	}
	if a := rw.Address; a != "" {
		if _, _, err := policy.SplitAddress(a); err != nil {
			return fieldErr("rewrite.address", "%q is not an address: %v", a, err)
		}
	}
	for _, p := range rw.AllowedFrom {
		if err := policy.ValidatePattern(p); err != nil {
			return fieldErr("rewrite.allowed_from", "%v", err)
		}
	}
	needAccount := rw.HeaderFrom != RewriteNever && rw.Address == ""
	for _, name := range c.UpstreamNames() {
		u, _ := c.UpstreamByName(name)
		if _, _, err := policy.SplitAddress(u.Username); err != nil {
			if needAccount {
				return fieldErr("rewrite.address", "required: rewrite.header_from = %q needs an address to put in From, and the username of upstream %q is not one", rw.HeaderFrom, name)
			}
			if rw.EnvelopeFrom == "account" {
				return fieldErr("rewrite.envelope_from", "\"account\": the username of upstream %q is not an address", name)
			}
		}
		// From is rewritten (and signed) for the routed upstream's account
		// when the message arrives; a failover upstream logging in as
		// another account would then send mail whose From it may not use
		// (Microsoft 365: SendAsDenied), and the signature forbids fixing it.
		if needAccount {
			for _, f := range u.Failover {
				if fu, ok := c.UpstreamByName(f); ok && !strings.EqualFold(fu.Username, u.Username) {
					return fieldErr("rewrite.address", "required: rewrite.header_from = %q puts upstream %q's account %s in From, but its failover %q logs in as %s; set rewrite.address to an address every failover upstream may send as", rw.HeaderFrom, name, u.Username, f, fu.Username)
				}
			}
		}
	}
	return nil
}

// validateUpstreamBase checks a named upstream the way validate checks
// [upstream].
func validateUpstreamBase(prefix string, u *UpstreamConfig) error {
	host, port, err := net.SplitHostPort(u.Addr)
	if u.Addr == "" || err != nil || host == "" || port == "" {
		return fieldErr(prefix+".addr", "%q is not host:port (e.g. \"smtp.example.com:587\"); required unless a provider preset fills it", u.Addr)
	}
	switch u.TLS {
	case "starttls", "implicit":
	default:
		return fieldErr(prefix+".tls", "%q: use \"starttls\" (port 587) or \"implicit\" (port 465); there is no plaintext mode", u.TLS)
	}
	if u.Password != "" {
		return fieldErr(prefix+".password", "a password in the configuration file is refused: use password_file (mode 0600), password_env, password_command or a systemd credential")
	}
	sources := 0
	for _, set := range []bool{u.PasswordFile != "", u.PasswordEnv != "", len(u.PasswordCommand) > 0, u.Credential != ""} {
		if set {
			sources++
		}
	}
	switch {
	case sources > 1:
		return fieldErr(prefix+".password_file", "more than one secret source is set: keep exactly one of password_file, password_env, password_command, credential")
	case u.Username != "" && sources == 0 && !u.OAuth2.Set():
		return fieldErr(prefix+".username", "set; give the secret through exactly one of password_file, password_env, password_command or credential (or [%s.oauth2])", prefix)
	case u.Username == "" && (sources > 0 || u.Auth != ""):
		return fieldErr(prefix+".username", "a secret source or auth is set but no username")
	}
	if len(u.PasswordCommand) > 0 && u.PasswordCommand[0] == "" {
		return fieldErr(prefix+".password_command", "the first element must be the program to run")
	}
	if u.DialTimeout <= 0 || u.CommandTimeout <= 0 {
		return fieldErr(prefix+".dial_timeout", "timeouts must be positive")
	}
	if u.MaxConnections <= 0 || u.MaxConnections > 64 {
		return fieldErr(prefix+".max_connections", "must be between 1 and 64")
	}
	if u.MaxMessagesPerConnection <= 0 {
		return fieldErr(prefix+".max_messages_per_connection", "must be at least 1")
	}
	return nil
}

// validateUpstreamExtras checks the keys issue 9 added to every upstream
// table: auth with OAuth2, rate, failover, provider, region.
func validateUpstreamExtras(prefix string, u *UpstreamConfig, c *Config) error {
	switch u.Auth {
	case "", "plain", "login", "xoauth2", "oauthbearer":
	default:
		return fieldErr(prefix+".auth", "%q: use \"plain\", \"login\", \"xoauth2\" or \"oauthbearer\"", u.Auth)
	}
	o := u.OAuth2
	if o.Set() {
		key := prefix + ".oauth2"
		if u.Auth != "xoauth2" && u.Auth != "oauthbearer" {
			return fieldErr(prefix+".auth", "%q: [%s] needs auth = \"xoauth2\" or \"oauthbearer\"", u.Auth, key)
		}
		if u.Username == "" {
			return fieldErr(prefix+".username", "required with [%s]: the mailbox the token is for", key)
		}
		if u.PasswordFile != "" || u.PasswordEnv != "" || len(u.PasswordCommand) > 0 || u.Credential != "" {
			return fieldErr(prefix+".password_file", "set together with [%s]: the access token comes from the token endpoint; remove the password source", key)
		}
		switch o.Flow {
		case "", upstream.FlowRefreshToken, upstream.FlowClientCredentials:
		default:
			return fieldErr(key+".flow", "%q: use %q or %q", o.Flow, upstream.FlowRefreshToken, upstream.FlowClientCredentials)
		}
		if o.TokenURL == "" || !strings.HasPrefix(o.TokenURL, "https://") && !strings.HasPrefix(o.TokenURL, "http://127.0.0.1") {
			return fieldErr(key+".token_url", "%q: required, an https:// URL (or set provider)", o.TokenURL)
		}
		if o.ClientID == "" {
			return fieldErr(key+".client_id", "required: the application (client) ID of your app registration")
		}
		for _, src := range []struct {
			name string
			s    *upstream.SecretSource
		}{{"client_secret", o.ClientSecret()}, {"refresh_token", o.RefreshToken()}} {
			if src.s == nil {
				continue
			}
			if err := src.s.Validate(); err != nil {
				// SecretSource names the password keys; say which table.
				return fieldErr(key+"."+src.name+"_file", "%s: set only one of %s_file, %s_env, %s_command, %s_credential", src.name, src.name, src.name, src.name, src.name)
			}
		}
		switch {
		case o.Flow == upstream.FlowClientCredentials && o.ClientSecret() == nil:
			return fieldErr(key+".client_secret_file", "the client_credentials flow needs a client secret (client_secret_file, _env, _command or _credential)")
		case o.Flow == upstream.FlowClientCredentials && o.RefreshToken() != nil:
			return fieldErr(key+".refresh_token_file", "the client_credentials flow uses no refresh token")
		case o.Flow != upstream.FlowClientCredentials && o.RefreshToken() == nil:
			return fieldErr(key+".refresh_token_file", "the refresh_token flow needs a refresh token (refresh_token_file, _env, _command or _credential); `sealpost oauth2 login` obtains one")
		}
	}
	if u.Rate.Events < 0 {
		return fieldErr(prefix+".rate", "must not be negative")
	}
	for _, f := range u.Failover {
		if _, ok := c.UpstreamByName(f); !ok {
			return fieldErr(prefix+".failover", "%q is not an upstream: use %q or the NAME of an [upstreams.NAME]", f, DefaultUpstream)
		}
	}
	return nil
}

// Effective pacing interval of an upstream: one message per interval.
func (u UpstreamConfig) paceInterval() time.Duration {
	if u.Rate.Unlimited() {
		return 0
	}
	return u.Rate.Per / time.Duration(u.Rate.Events)
}
