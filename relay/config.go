package relay

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"sealpost/certs"
	"sealpost/policy"
)

// DefaultConfigPath is where serve looks when neither -config nor
// $SEALPOST_CONFIG names a file.
const DefaultConfigPath = "/etc/sealpost/relay.toml"

// Config is the whole configuration of one relay, as read from TOML.
// Field tags are the contract in DESIGN.md: do not rename them.
type Config struct {
	Hostname  string         `toml:"hostname"`
	RunAsRoot bool           `toml:"run_as_root"`
	Listen    ListenConfig   `toml:"listen"`
	Upstream  UpstreamConfig `toml:"upstream"`
	Spool     SpoolConfig    `toml:"spool"`
	DKIM      DKIMConfig     `toml:"dkim"`
	Limits    LimitsConfig   `toml:"limits"`
	Policy    PolicyConfig   `toml:"policy"`
	Log       LogConfig      `toml:"log"`
	// Metrics is the Prometheus and health endpoint (see metrics.go).
	Metrics MetricsConfig `toml:"metrics"`
	// Check holds settings only `sealpost check` reads.
	Check CheckConfig `toml:"check"`

	// Upstreams are named upstreams beside [upstream], with the same keys;
	// Routes pick one by envelope sender (config_upstreams.go).
	Upstreams map[string]UpstreamConfig `toml:"upstreams"`
	Routes    []RouteConfig             `toml:"routes"`
	Rewrite   RewriteConfig             `toml:"rewrite"`

	// Path is the file the configuration came from ("" when built in code).
	Path string `toml:"-"`
}

type ListenConfig struct {
	Addrs          []ListenAddr `toml:"addrs"`
	Socket         string       `toml:"socket"`
	AllowNetworks  []Network    `toml:"allow_networks"`
	MaxMessageSize Size         `toml:"max_message_size"`
	MaxRecipients  int          `toml:"max_recipients"`
	MaxConnections int          `toml:"max_connections"`
	// MaxConnectionsPerClient caps one client address so a single runaway
	// program cannot take every slot.
	MaxConnectionsPerClient int `toml:"max_connections_per_client"`
	// ControlSocket is where the daemon takes `queue flush` and `queue
	// delete` (mode 0660: the service user and its group). Default: next
	// to Socket ("control.sock"); none when Socket is "" and this is unset.
	ControlSocket string `toml:"control_socket"`
	// ReadTimeout bounds the wait for each command; DataTimeout the whole
	// DATA transfer, so a slow client cannot hold a slot forever.
	ReadTimeout  Duration `toml:"read_timeout"`
	WriteTimeout Duration `toml:"write_timeout"`
	DataTimeout  Duration `toml:"data_timeout"`
}

type UpstreamConfig struct {
	Addr          string     `toml:"addr"`
	TLS           string     `toml:"tls"`
	MinTLSVersion TLSVersion `toml:"min_tls_version"`
	CAFile        string     `toml:"ca_file"`
	// Pins optionally narrow trust to certificates with these public keys
	// ("sha256/BASE64"); chain and host name are verified as always.
	Pins []string `toml:"pins"`
	// ServerName overrides the host name the certificate is checked
	// against (default: the host part of addr).
	ServerName      string   `toml:"server_name"`
	Username        string   `toml:"username"`
	Auth            string   `toml:"auth"`
	PasswordFile    string   `toml:"password_file"`
	PasswordEnv     string   `toml:"password_env"`
	PasswordCommand []string `toml:"password_command"`
	// Credential names a systemd credential ($CREDENTIALS_DIRECTORY/NAME).
	Credential     string   `toml:"credential"`
	DialTimeout    Duration `toml:"dial_timeout"`
	CommandTimeout Duration `toml:"command_timeout"`
	// MaxConnections caps the connections open to the upstream at once
	// (deliveries in parallel are min(this, spool.workers)).
	MaxConnections int `toml:"max_connections"`
	// MaxMessagesPerConnection closes a connection after this many
	// messages (providers cap it; Gmail at 100).
	MaxMessagesPerConnection int `toml:"max_messages_per_connection"`

	// Password exists only so that a literal password in the file is
	// recognised and refused with a pointer to the safe sources.
	Password string `toml:"password"`

	// Provider fills addr, tls, auth and OAuth2 endpoints from a preset
	// (presets.go); keys set in the file win. Region completes the
	// address for providers with regional endpoints (ses).
	Provider string `toml:"provider"`
	Region   string `toml:"region"`
	// OAuth2 is where XOAUTH2/OAUTHBEARER access tokens come from.
	OAuth2 OAuth2Config `toml:"oauth2"`
	// Rate paces deliveries through this upstream ("30/m"); 0 = no pacing.
	Rate Rate `toml:"rate"`
	// Failover names the upstreams tried, in order, when this one cannot
	// be reached or fails TLS.
	Failover []string `toml:"failover"`
}

type SpoolConfig struct {
	Dir     string   `toml:"dir"`
	MaxAge  Duration `toml:"max_age"`
	Workers int      `toml:"workers"`
	// RetryIntervals is the wait after each failed attempt; the last one
	// repeats until max_age.
	RetryIntervals []Duration `toml:"retry_intervals"`
	// KeepFailed is how long given-up messages stay in failed/.
	KeepFailed Duration `toml:"keep_failed"`
	// Bounce sends a delivery status notification to the envelope sender
	// of a message given up (never for a null sender).
	Bounce bool `toml:"bounce"`
}

type DKIMConfig struct {
	Keys []DKIMKey `toml:"keys"`
	// Unsigned decides what happens to a message whose From domain has no
	// key: "reject" (the default once any key is configured) or "relay".
	Unsigned string `toml:"unsigned"`
	// Expiration, when set, puts an x= tag this far after signing time.
	Expiration Duration `toml:"expiration"`
}

type DKIMKey struct {
	Domain   string `toml:"domain"`
	Selector string `toml:"selector"`
	KeyFile  string `toml:"key_file"`
	// Subdomains lets this key sign for subdomains of Domain too
	// (mail From alerts@eu.example.com signed with d=example.com).
	Subdomains bool `toml:"subdomains"`
}

type LimitsConfig struct {
	PerSender RateLimit `toml:"per_sender"`
	PerClient RateLimit `toml:"per_client"`
	// PerUser is keyed by the local user who submitted (unix socket peer,
	// or owner of a loopback TCP client's socket); off by default.
	PerUser RateLimit `toml:"per_user"`
	// Global caps the whole host, whoever sends; off by default.
	Global RateLimit `toml:"global"`
}

// PolicyConfig holds the message and sender rules. Every default is the
// strict setting; each rule can be relaxed on its own.
type PolicyConfig struct {
	// Mode "enforce" refuses what breaks a rule; "report" only records what
	// would have been refused, so an admin can watch before enforcing.
	// Line-ending and NUL checks are enforced in both modes: passing them
	// on would make sealpost a carrier of SMTP smuggling.
	Mode string `toml:"mode"`
	// AllowedSenders are envelope sender patterns ("*@example.com",
	// "cron@app01.example.com", "*@*.example.com", "*"); empty allows any.
	AllowedSenders []string `toml:"allowed_senders"`
	// AllowedFromDomains are header From domains allowed besides those
	// with a DKIM key ("example.com", "*.example.com").
	AllowedFromDomains []string `toml:"allowed_from_domains"`
	// AllowAnyFrom drops the From domain rule altogether.
	AllowAnyFrom bool `toml:"allow_any_from"`
}

type RateLimit struct {
	Rate  Rate `toml:"rate"`
	Burst int  `toml:"burst"`
}

// CheckConfig tells `sealpost check` what it cannot find out by itself.
type CheckConfig struct {
	// UpstreamIPs are the addresses the upstream provider sends from; SPF
	// of each sending domain is evaluated for them. Empty: check derives
	// them from a known provider's SPF include, if it can.
	UpstreamIPs []string `toml:"upstream_ips"`
	// ServiceUser is the user sealpost runs as (name or numeric uid), which
	// must own the password file and spool. Empty: the user running check.
	ServiceUser string `toml:"service_user"`
}

type LogConfig struct {
	Level  slog.Level `toml:"level"`
	Format string     `toml:"format"`
	// AuditFile, when set, receives the audit records (JSON lines, mode
	// 0640) instead of stderr; SIGHUP reopens it for logrotate.
	AuditFile string `toml:"audit_file"`
}

// Defaults returns the configuration used for every key a file leaves out.
// Every default is the safe choice: loopback only, TLS 1.2 at least, limits on.
func Defaults() *Config {
	return &Config{
		Listen: ListenConfig{
			Addrs:                   []ListenAddr{{Host: "127.0.0.1", Port: "25"}, {Host: "::1", Port: "25"}},
			Socket:                  "/run/sealpost/submit.sock",
			AllowNetworks:           []Network{mustNetwork("127.0.0.0/8"), mustNetwork("::1/128")},
			MaxMessageSize:          25 << 20,
			MaxRecipients:           100,
			MaxConnections:          100,
			MaxConnectionsPerClient: 20,
			ReadTimeout:             Duration(5 * time.Minute),
			WriteTimeout:            Duration(5 * time.Minute),
			DataTimeout:             Duration(10 * time.Minute),
		},
		Upstream: UpstreamConfig{
			TLS:            "starttls",
			MinTLSVersion:  TLSVersion(0x0303),
			DialTimeout:    Duration(30 * time.Second),
			CommandTimeout: Duration(5 * time.Minute),

			MaxConnections:           4,
			MaxMessagesPerConnection: 100,
		},
		Spool: SpoolConfig{
			Dir:            "/var/spool/sealpost",
			MaxAge:         Duration(5 * 24 * time.Hour),
			Workers:        4,
			RetryIntervals: []Duration{Duration(time.Minute), Duration(5 * time.Minute), Duration(15 * time.Minute), Duration(time.Hour)},
			KeepFailed:     Duration(7 * 24 * time.Hour),
			Bounce:         true,
		},
		Limits: LimitsConfig{
			PerSender: RateLimit{Rate: Rate{Events: 60, Per: time.Minute}, Burst: 20},
			PerClient: RateLimit{Rate: Rate{Events: 600, Per: time.Minute}, Burst: 100},
		},
		Policy: PolicyConfig{Mode: "enforce"},
		Log:    LogConfig{Level: slog.LevelInfo, Format: "auto"},

		Metrics: MetricsConfig{ReadyUpstreamWindow: Duration(10 * time.Minute)},
	}
}

func mustNetwork(s string) Network {
	var n Network
	if err := n.UnmarshalText([]byte(s)); err != nil {
		panic(err)
	}
	return n
}

// ConfigError is a problem with one key of a configuration file.
type ConfigError struct {
	File string
	Line int // 0 when unknown
	Key  string
	Msg  string
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// LoadConfig reads, decodes and validates the file at path.
func LoadConfig(path string) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	return ParseConfig(path, src)
}

// ParseConfig decodes src strictly over the defaults and validates the result.
// name labels errors (usually the file path).
func ParseConfig(name string, src []byte) (*Config, error) {
	cfg := Defaults()
	md, err := toml.NewDecoder(bytes.NewReader(src)).Decode(cfg)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &ConfigError{File: name, Line: pe.Position.Line, Key: pe.LastKey, Msg: pe.Message}
		}
		// Type mismatches come as plain errors with the position in the text.
		if m := tomlTypeError.FindStringSubmatch(err.Error()); m != nil {
			line, _ := strconv.Atoi(m[1])
			return nil, &ConfigError{File: name, Line: line, Key: m[2], Msg: m[3]}
		}
		return nil, &ConfigError{File: name, Msg: err.Error()}
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		k := undecoded[0].String()
		return nil, &ConfigError{File: name, Line: locateKey(src, k), Key: k, Msg: "unknown key (see relay.example.toml for the valid ones)"}
	}
	cfg.Path = name
	if err := cfg.applyUpstreamDefaults(md); err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			ce.File = name
			ce.Line = locateKey(src, ce.Key)
		}
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			ce.File = name
			ce.Line = locateKey(src, ce.Key)
		}
		return nil, err
	}
	return cfg, nil
}

var tomlTypeError = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

func fieldErr(key, format string, args ...any) error {
	return &ConfigError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

func (c *Config) validate() error {
	if c.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return fieldErr("hostname", "not set and the system host name is unknown: set it to this host's fully qualified name")
		}
		c.Hostname = h
	}
	if strings.ContainsAny(c.Hostname, " \t\r\n<>[]") {
		return fieldErr("hostname", "%q is not a host name", c.Hostname)
	}

	l := &c.Listen
	if len(l.Addrs) == 0 && l.Socket == "" {
		return fieldErr("listen.addrs", "no listen address and no socket: nothing could submit mail")
	}
	if len(l.AllowNetworks) == 0 && len(l.Addrs) > 0 {
		return fieldErr("listen.allow_networks", "empty: every TCP client would be refused")
	}
	for _, a := range l.Addrs {
		// A relay that others on the network can reach is an open relay
		// unless clients must log in over TLS, and sealpost does not offer
		// client AUTH yet: refuse here, not after the first spam run.
		if !a.Loopback() {
			return fieldErr("listen.addrs", "%s is not a loopback address: sealpost listens on this host only (127.0.0.1, ::1); listening beyond it would need client AUTH over TLS, which this version does not offer", a)
		}
	}
	if l.MaxMessageSize <= 0 || l.MaxMessageSize > 1<<30 {
		return fieldErr("listen.max_message_size", "must be between 1B and 1GiB")
	}
	if l.MaxRecipients <= 0 {
		return fieldErr("listen.max_recipients", "must be at least 1")
	}
	if l.MaxConnections <= 0 {
		return fieldErr("listen.max_connections", "must be at least 1")
	}
	if l.MaxConnectionsPerClient <= 0 {
		return fieldErr("listen.max_connections_per_client", "must be at least 1")
	}
	for key, d := range map[string]Duration{"listen.read_timeout": l.ReadTimeout, "listen.write_timeout": l.WriteTimeout, "listen.data_timeout": l.DataTimeout} {
		if d <= 0 {
			return fieldErr(key, "must be positive")
		}
	}

	u := &c.Upstream
	if u.Addr == "" {
		return fieldErr("upstream.addr", "required: the provider's submission server, e.g. \"smtp.example.com:587\"")
	}
	host, port, err := net.SplitHostPort(u.Addr)
	if err != nil || host == "" || port == "" {
		return fieldErr("upstream.addr", "%q is not host:port (e.g. \"smtp.example.com:587\")", u.Addr)
	}
	switch u.TLS {
	case "starttls", "implicit":
	case "none", "plain", "off", "":
		return fieldErr("upstream.tls", "%q: sealpost never sends mail or passwords in clear; use \"starttls\" (port 587) or \"implicit\" (port 465)", u.TLS)
	default:
		return fieldErr("upstream.tls", "%q: use \"starttls\" (port 587) or \"implicit\" (port 465)", u.TLS)
	}
	for _, p := range u.Pins {
		if _, err := certs.ParsePin(p); err != nil {
			return fieldErr("upstream.pins", "%v", err)
		}
	}
	if u.Password != "" {
		return fieldErr("upstream.password", "a password in the configuration file is refused: use password_file (mode 0600), password_env, password_command or a systemd credential")
	}
	switch u.Auth {
	case "", "plain", "login", "xoauth2", "oauthbearer":
	default:
		return fieldErr("upstream.auth", "%q: use \"plain\", \"login\", \"xoauth2\" or \"oauthbearer\"", u.Auth)
	}
	sources := 0
	for _, set := range []bool{u.PasswordFile != "", u.PasswordEnv != "", len(u.PasswordCommand) > 0, u.Credential != ""} {
		if set {
			sources++
		}
	}
	switch {
	case u.Username != "" && sources == 0 && !u.OAuth2.Set():
		return fieldErr("upstream.username", "set; give the secret through exactly one of password_file, password_env, password_command or credential")
	case sources > 1:
		return fieldErr("upstream.password_file", "more than one secret source is set: keep exactly one of password_file, password_env, password_command, credential")
	case u.Username == "" && sources > 0:
		return fieldErr("upstream.username", "a secret source is set but no username")
	case u.Username == "" && u.Auth != "":
		return fieldErr("upstream.auth", "set but no username")
	}
	if len(u.PasswordCommand) > 0 && u.PasswordCommand[0] == "" {
		return fieldErr("upstream.password_command", "the first element must be the program to run")
	}
	if u.DialTimeout <= 0 || u.CommandTimeout <= 0 {
		return fieldErr("upstream.dial_timeout", "timeouts must be positive")
	}

	if c.Spool.Dir == "" {
		return fieldErr("spool.dir", "required")
	}
	if c.Spool.MaxAge < Duration(time.Minute) {
		return fieldErr("spool.max_age", "must be at least 1m")
	}
	if len(c.Spool.RetryIntervals) == 0 {
		return fieldErr("spool.retry_intervals", "empty: give at least one interval, e.g. [\"1m\", \"5m\", \"15m\", \"1h\"]")
	}
	for _, d := range c.Spool.RetryIntervals {
		if d <= 0 {
			return fieldErr("spool.retry_intervals", "intervals must be positive")
		}
	}
	if c.Spool.Workers <= 0 || c.Spool.Workers > 256 {
		return fieldErr("spool.workers", "must be between 1 and 256")
	}
	if c.Spool.KeepFailed < Duration(time.Hour) {
		return fieldErr("spool.keep_failed", "must be at least 1h: failed messages are kept for the operator to look at")
	}
	if u.MaxConnections <= 0 || u.MaxConnections > 64 {
		return fieldErr("upstream.max_connections", "must be between 1 and 64")
	}
	if u.MaxMessagesPerConnection <= 0 {
		return fieldErr("upstream.max_messages_per_connection", "must be at least 1")
	}
	if cs := l.ControlSocket; cs != "" && !filepath.IsAbs(cs) {
		return fieldErr("listen.control_socket", "%q is not an absolute path", cs)
	}

	for i, k := range c.DKIM.Keys {
		key := fmt.Sprintf("dkim.keys[%d]", i)
		switch {
		case k.Domain == "":
			return fieldErr(key+".domain", "required")
		case !validDomain(k.Domain):
			return fieldErr(key+".domain", "%q is not a domain name", k.Domain)
		case k.Selector == "":
			return fieldErr(key+".selector", "required")
		case !validSelector(k.Selector):
			return fieldErr(key+".selector", "%q is not a valid selector (letters, digits, hyphens, dots)", k.Selector)
		case k.KeyFile == "":
			return fieldErr(key+".key_file", "required")
		}
		c.DKIM.Keys[i].Domain = strings.ToLower(strings.TrimSuffix(k.Domain, "."))
	}
	switch c.DKIM.Unsigned {
	case "":
		c.DKIM.Unsigned = "relay"
		if len(c.DKIM.Keys) > 0 {
			c.DKIM.Unsigned = "reject"
		}
	case "reject", "relay":
	default:
		return fieldErr("dkim.unsigned", "%q: use \"reject\" or \"relay\"", c.DKIM.Unsigned)
	}
	if c.DKIM.Expiration != 0 && c.DKIM.Expiration < Duration(time.Hour) {
		return fieldErr("dkim.expiration", "shorter than 1h: mail delayed in a queue would fail verification")
	}

	switch c.Policy.Mode {
	case "enforce", "report":
	default:
		return fieldErr("policy.mode", "%q: use \"enforce\" or \"report\"", c.Policy.Mode)
	}
	for _, p := range c.Policy.AllowedSenders {
		if err := policy.ValidatePattern(p); err != nil {
			return fieldErr("policy.allowed_senders", "%v", err)
		}
	}
	for _, d := range c.Policy.AllowedFromDomains {
		if !validDomain(strings.TrimPrefix(d, "*.")) {
			return fieldErr("policy.allowed_from_domains", "%q is not a domain (use \"example.com\" or \"*.example.com\")", d)
		}
	}
	for key, rl := range map[string]RateLimit{"limits.per_sender": c.Limits.PerSender, "limits.per_client": c.Limits.PerClient, "limits.per_user": c.Limits.PerUser, "limits.global": c.Limits.Global} {
		if !rl.Rate.Unlimited() && rl.Burst <= 0 {
			return fieldErr(key, "burst must be at least 1 when a rate is set")
		}
	}

	switch c.Log.Format {
	case "auto", "json", "text":
	default:
		return fieldErr("log.format", "%q: use \"auto\", \"json\" or \"text\"", c.Log.Format)
	}
	if c.Log.AuditFile != "" && !filepath.IsAbs(c.Log.AuditFile) {
		return fieldErr("log.audit_file", "%q is not an absolute path", c.Log.AuditFile)
	}
	if err := c.Metrics.validate(); err != nil {
		return err
	}
	if err := c.validateUpstreams(); err != nil {
		return err
	}
	for _, ip := range c.Check.UpstreamIPs {
		if _, err := netip.ParseAddr(ip); err != nil {
			return fieldErr("check.upstream_ips", "%q is not an IP address (list addresses, e.g. [\"192.0.2.10\", \"2001:db8::10\"])", ip)
		}
	}
	if u := c.Check.ServiceUser; u != "" && !validUserName(u) {
		return fieldErr("check.service_user", "%q is not a user name or numeric uid", u)
	}
	// Last: a file with a more specific mistake should hear about that first.
	if !c.Policy.AllowAnyFrom && len(c.Policy.AllowedFromDomains) == 0 && len(c.DKIM.Keys) == 0 {
		return fieldErr("policy.allowed_from_domains", "empty and no DKIM key is configured, so every message would be refused: list the domains this host sends as (or add [[dkim.keys]]), or set allow_any_from = true")
	}
	return nil
}

func validDomain(d string) bool {
	d = strings.TrimSuffix(d, ".")
	if d == "" || len(d) > 253 {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// validUserName accepts POSIX-portable user names (as useradd does) and
// numeric uids.
func validUserName(u string) bool {
	if len(u) > 32 {
		return false
	}
	for i, c := range u {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-' && i > 0) {
			return false
		}
	}
	return u != ""
}

// validSelector accepts RFC 6376 selectors: one or more dot-separated
// sub-domain labels.
func validSelector(s string) bool { return validDomain(s) && !strings.HasSuffix(s, ".") }

// ControlSocketPath is where the daemon listens for queue commands ("" for
// nowhere): listen.control_socket, else control.sock beside listen.socket.
func (c *Config) ControlSocketPath() string {
	if c.Listen.ControlSocket != "" {
		return c.Listen.ControlSocket
	}
	if c.Listen.Socket == "" {
		return ""
	}
	return filepath.Join(filepath.Dir(c.Listen.Socket), "control.sock")
}

// UpstreamHost is the name the upstream certificate must be valid for.
func (c *Config) UpstreamHost() string {
	if c.Upstream.ServerName != "" {
		return c.Upstream.ServerName
	}
	host, _, _ := net.SplitHostPort(c.Upstream.Addr)
	return host
}

// ClientTLS builds the verified TLS configuration for the upstream.
func (c *Config) ClientTLS() (*tls.Config, error) {
	return certs.ClientConfig(certs.ClientOptions{
		ServerName: c.UpstreamHost(),
		CAFile:     c.Upstream.CAFile,
		MinVersion: uint16(c.Upstream.MinTLSVersion),
		Pins:       c.Upstream.Pins,
	})
}

// locateKey finds the line of a dotted key ("upstream.password",
// "dkim.keys[1].key_file") in TOML source, so validation errors can point at
// it. It understands the layouts people write by hand; 0 means not found.
func locateKey(src []byte, key string) int {
	if key == "" {
		return 0
	}
	parts := strings.Split(key, ".")
	leaf := parts[len(parts)-1]
	if i := strings.IndexByte(leaf, '['); i >= 0 {
		leaf = leaf[:i]
	}
	table := strings.Join(parts[:len(parts)-1], ".")
	wantIndex := -1
	if i := strings.IndexByte(table, '['); i >= 0 {
		fmt.Sscanf(table[i:], "[%d]", &wantIndex)
		table = table[:i]
	}
	current, index, tableLine := "", -1, 0
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(text, "[["):
			name := strings.TrimSpace(strings.Trim(text, "[] "))
			if name != current {
				index = -1
			}
			current = name
			index++
			if name == table && (wantIndex < 0 || index == wantIndex) && tableLine == 0 {
				tableLine = line
			}
		case strings.HasPrefix(text, "["):
			current, index = strings.TrimSpace(strings.Trim(text, "[] ")), -1
			if current == table && tableLine == 0 {
				tableLine = line
			}
		default:
			name, _, ok := strings.Cut(text, "=")
			if !ok || strings.HasPrefix(text, "#") {
				continue
			}
			name = strings.TrimSpace(name)
			if current != table || (wantIndex >= 0 && index != wantIndex) {
				// Inline tables: "per_sender = { rate = … }" under [limits].
				if table == current+"."+name || (current == "" && table == name) {
					return line
				}
				continue
			}
			if name == leaf {
				return line
			}
		}
	}
	// A key that is missing is best shown by the table it belongs in.
	return tableLine
}

// Summary is the effective configuration as log attributes, secrets left out
// by construction: only the names of secret sources are shown.
func (c *Config) Summary() []any {
	addrs := make([]string, len(c.Listen.Addrs))
	for i, a := range c.Listen.Addrs {
		addrs[i] = a.String()
	}
	secret := "none"
	switch u := c.Upstream; {
	case u.PasswordFile != "":
		secret = "file " + u.PasswordFile
	case u.PasswordEnv != "":
		secret = "env $" + u.PasswordEnv
	case len(u.PasswordCommand) > 0:
		secret = "command " + filepath.Base(u.PasswordCommand[0])
	case u.Credential != "":
		secret = "systemd credential " + u.Credential
	}
	return []any{
		slog.String("config", c.Path),
		slog.String("hostname", c.Hostname),
		slog.Any("listen", addrs),
		slog.String("socket", c.Listen.Socket),
		slog.String("upstream", c.Upstream.Addr),
		slog.String("upstream_tls", c.Upstream.TLS),
		slog.String("upstream_user", c.Upstream.Username),
		slog.String("secret_source", secret),
		slog.String("spool", c.Spool.Dir),
		slog.Int("dkim_keys", len(c.DKIM.Keys)),
	}
}
