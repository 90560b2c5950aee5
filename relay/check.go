package relay

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"sealpost/certs"
	"sealpost/upstream"
)

// `sealpost check`: the production-readiness audit. Each check yields
// Findings; the command prints them and exits 1 if any is a FAIL.
//
// The JSON form of a Report is a contract (README, "Before go-live"):
// field names and check IDs do not change; new checks may be added.

// Status is the verdict of one finding.
type Status string

const (
	StatusPass Status = "PASS"
	StatusWarn Status = "WARN"
	StatusFail Status = "FAIL"
)

// Finding is the result of one check on one subject.
type Finding struct {
	// ID names the check, e.g. "secrets.source"; stable.
	ID string `json:"id"`
	// Subject is what was checked when a check runs once per thing (a DKIM
	// key, a domain); empty otherwise.
	Subject string `json:"subject,omitempty"`
	Status  Status `json:"status"`
	// Found says what the check saw. It never holds a secret.
	Found string `json:"found"`
	// Fix says what to do; empty when there is nothing to do.
	Fix string `json:"fix,omitempty"`
}

// ReportFormat is the version of the JSON shape of Report.
const ReportFormat = 1

// Report is the outcome of a whole check run.
type Report struct {
	Format   int       `json:"format"`
	Config   string    `json:"config"`
	DNS      bool      `json:"dns"`
	Live     bool      `json:"live"`
	OK       bool      `json:"ok"` // no FAIL
	Counts   Counts    `json:"counts"`
	Findings []Finding `json:"checks"`
}

// Counts tallies findings by status.
type Counts struct {
	Pass int `json:"pass"`
	Warn int `json:"warn"`
	Fail int `json:"fail"`
}

// CheckOptions steer a check run. The zero value runs the offline checks
// against the real system.
type CheckOptions struct {
	// DNS runs the DNS checks (DKIM, SPF, DMARC, reverse DNS).
	DNS bool
	// Live connects to the upstream: TLS, certificate, AUTH, QUIT.
	Live bool
	// Resolver answers the DNS checks; nil means net.DefaultResolver.
	Resolver Resolver
	// Euid is the effective uid sealpost check runs as; nil means
	// os.Geteuid(). Tests set it to play root or the service user.
	Euid *int
	// Getenv replaces os.Getenv (password_env, $CREDENTIALS_DIRECTORY).
	Getenv func(string) string
	// Now replaces time.Now (certificate expiry).
	Now func() time.Time
	// BuildInfo replaces debug.ReadBuildInfo's result.
	BuildInfo *debug.BuildInfo
	// Executable is the binary's path for the govulncheck command; default
	// os.Executable().
	Executable string
	// Timeout bounds each network step (DNS query, upstream probe) and
	// password_command; default 15s.
	Timeout time.Duration
}

// checker runs one report.
type checker struct {
	cfg  *Config
	opts CheckOptions
	out  []Finding

	euid int
	// wantUID is the user files must belong to; wantWho names it.
	wantUID int
	wantWho string
}

// Check audits cfg and the host it runs on.
func Check(ctx context.Context, cfg *Config, opts CheckOptions) Report {
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Resolver == nil {
		opts.Resolver = net.DefaultResolver
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 15 * time.Second
	}
	c := &checker{cfg: cfg, opts: opts, euid: os.Geteuid()}
	if opts.Euid != nil {
		c.euid = *opts.Euid
	}

	c.checkIdentity()
	c.checkTLS()
	c.checkSecrets(ctx)
	c.forNamedUpstreams(func(sub *checker) {
		sub.checkTLS()
		sub.checkSecrets(ctx)
	})
	c.checkFiles()
	c.checkDKIMKeys()
	c.checkPolicy()
	c.checkRewrite()
	c.checkAudit()
	c.checkBuild()
	if opts.DNS {
		c.checkDNS(ctx)
	}
	if opts.Live {
		c.checkLive(ctx)
		c.forNamedUpstreams(func(sub *checker) { sub.checkLive(ctx) })
	}

	r := Report{Format: ReportFormat, Config: cfg.Path, DNS: opts.DNS, Live: opts.Live, Findings: c.out}
	for _, f := range c.out {
		switch f.Status {
		case StatusPass:
			r.Counts.Pass++
		case StatusWarn:
			r.Counts.Warn++
		case StatusFail:
			r.Counts.Fail++
		}
	}
	r.OK = r.Counts.Fail == 0
	return r
}

// forNamedUpstreams runs upstream checks for each [upstreams.NAME] as if it
// were [upstream], naming the upstream in each finding's subject.
func (c *checker) forNamedUpstreams(run func(sub *checker)) {
	names := make([]string, 0, len(c.cfg.Upstreams))
	for name := range c.cfg.Upstreams {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		cfg := *c.cfg
		cfg.Upstream = c.cfg.Upstreams[name]
		sub := *c
		sub.cfg, sub.out = &cfg, nil
		run(&sub)
		for _, f := range sub.out {
			f.Subject = strings.TrimSpace("upstreams." + name + " " + f.Subject)
			c.out = append(c.out, f)
		}
	}
}

func (c *checker) add(id, subject string, st Status, found, fix string) {
	c.out = append(c.out, Finding{ID: id, Subject: subject, Status: st, Found: found, Fix: fix})
}

func (c *checker) pass(id, subject, found string) { c.add(id, subject, StatusPass, found, "") }
func (c *checker) warn(id, subject, found, fix string) {
	c.add(id, subject, StatusWarn, found, fix)
}
func (c *checker) fail(id, subject, found, fix string) {
	c.add(id, subject, StatusFail, found, fix)
}

// unitHint points at the systemd unit that runs sealpost as its own user.
const unitHint = "run sealpost from sealpost.service (User=sealpost, hardened) or as another dedicated user"

// checkIdentity decides whose files are whose: the configured service user
// if there is one, else the user running check.
func (c *checker) checkIdentity() {
	c.wantUID, c.wantWho = c.euid, describeUID(c.euid)+", the user running check"
	if name := c.cfg.Check.ServiceUser; name != "" {
		uid, err := lookupUID(name)
		if err != nil {
			c.fail("identity.service_user", name, fmt.Sprintf("check.service_user %q: %v", name, err),
				"create the user (useradd --system --home-dir /var/spool/sealpost --shell /usr/sbin/nologin sealpost) or fix check.service_user")
		} else {
			c.wantUID, c.wantWho = uid, describeUID(uid)+", check.service_user"
			if c.euid != 0 && c.euid != uid {
				c.warn("identity.service_user", name, fmt.Sprintf("check runs as %s, not as the service user %s: what it can read may differ from what sealpost can", describeUID(c.euid), describeUID(uid)),
					"run check as the service user: sudo -u "+name+" sealpost check")
			} else {
				c.pass("identity.service_user", name, "files are checked against "+describeUID(uid))
			}
		}
	}

	switch {
	case c.euid != 0:
		c.pass("identity.root", "", "check runs as "+describeUID(c.euid)+", not root")
	case c.cfg.RunAsRoot:
		c.warn("identity.root", "", "running as root is allowed by run_as_root = true: a flaw in sealpost would be a flaw with full power over the host",
			"set run_as_root = false and "+unitHint)
	default:
		found := "check runs as root and run_as_root is false: sealpost serve would refuse to start like this"
		if c.cfg.Check.ServiceUser == "" {
			found += "; file owners were compared against root (set check.service_user to compare against the service user)"
		}
		c.fail("identity.root", "", found, unitHint+"; run check as that user too (sudo -u sealpost sealpost check)")
	}
}

func lookupUID(name string) (int, error) {
	if n, err := strconv.Atoi(name); err == nil {
		return n, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(u.Uid)
}

// describeUID renders "sealpost (uid 998)", or just "uid 998" for a uid
// without a name.
func describeUID(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return fmt.Sprintf("%s (uid %d)", u.Username, uid)
	}
	return fmt.Sprintf("uid %d", uid)
}

func (c *checker) checkTLS() {
	u := c.cfg.Upstream
	_, port, _ := net.SplitHostPort(u.Addr)
	switch {
	case u.TLS == "starttls" && port == "465":
		c.warn("tls.mode", "", "tls = \"starttls\" on port 465, where servers speak TLS from the first byte: every connection would fail",
			"set tls = \"implicit\" for port 465, or use port 587 with starttls")
	case u.TLS == "implicit" && port == "587":
		c.warn("tls.mode", "", "tls = \"implicit\" on port 587, where servers expect STARTTLS: every connection would fail",
			"set tls = \"starttls\" for port 587, or use port 465 with implicit")
	case u.TLS == "starttls":
		c.pass("tls.mode", "", "STARTTLS to "+u.Addr+" is required before AUTH and mail; certificate verified for "+c.cfg.UpstreamHost())
	default:
		c.pass("tls.mode", "", "implicit TLS to "+u.Addr+"; certificate verified for "+c.cfg.UpstreamHost())
	}

	if v := uint16(u.MinTLSVersion); v >= 0x0303 {
		c.pass("tls.min_version", "", "minimum "+minVersionLabel(v))
	} else {
		// The configuration refuses these; a Config built in code could not.
		c.fail("tls.min_version", "", "minimum "+minVersionLabel(v)+" is below TLS 1.2", "set min_tls_version = \"1.2\" or \"1.3\"")
	}

	if u.CAFile == "" {
		c.pass("tls.ca_file", "", "upstream certificates are verified against the system roots")
	} else {
		c.checkCAFile(u.CAFile)
	}
	c.checkPins(u.Pins)
}

func minVersionLabel(v uint16) string {
	switch v {
	case 0x0301:
		return "TLS 1.0"
	case 0x0302:
		return "TLS 1.1"
	case 0x0303:
		return "TLS 1.2"
	case 0x0304:
		return "TLS 1.3"
	}
	return fmt.Sprintf("TLS version %#04x", v)
}

// checkPins reports the key pins: well formed, and more than one so a key
// rotation at the provider does not stop all mail.
func (c *checker) checkPins(pins []string) {
	if len(pins) == 0 {
		return
	}
	for _, p := range pins {
		if _, err := certs.ParsePin(p); err != nil {
			c.fail("tls.pins", "", err.Error(), "write each pin as \"sha256/\" + base64 of the SHA-256 of the SubjectPublicKeyInfo")
			return
		}
	}
	if len(pins) == 1 {
		c.warn("tls.pins", "", "one key pinned: when the provider rotates that key, mail stops until the pin is changed",
			"pin a backup key or the issuing CA's key as well")
		return
	}
	c.pass("tls.pins", "", fmt.Sprintf("%d key pins, well formed; checked after chain and host name verification", len(pins)))
}

func (c *checker) checkCAFile(path string) {
	if _, err := certs.LoadPool(path); err != nil {
		c.fail("tls.ca_file", path, err.Error(), "point ca_file at a readable PEM bundle of CA certificates, or set it to \"\" for the system roots")
		return
	}
	data, _ := os.ReadFile(path)
	now := c.opts.Now()
	var n int
	var expired []string
	for rest := data; ; {
		cert, r, ok := nextCert(rest)
		if !ok {
			break
		}
		rest = r
		n++
		if now.After(cert.NotAfter) {
			expired = append(expired, fmt.Sprintf("%q (expired %s)", cert.Subject.CommonName, cert.NotAfter.Format(time.DateOnly)))
		}
	}
	if len(expired) > 0 {
		c.warn("tls.ca_file", path, fmt.Sprintf("%d CA certificates, of which expired: %s", n, strings.Join(expired, ", ")),
			"replace the expired CA certificates; chains through them no longer verify")
		return
	}
	c.pass("tls.ca_file", path, fmt.Sprintf("%d CA certificates parse, none expired; used besides the system roots", n))
}

func (c *checker) checkSecrets(ctx context.Context) {
	u := c.cfg.Upstream
	c.checkSecretInConfig()
	if u.Username == "" {
		c.warn("secrets.source", "", "no upstream username: sealpost sends without AUTH",
			"most providers require AUTH on submission: set upstream.username and a password source")
		return
	}
	if u.OAuth2.Set() {
		c.checkOAuth2Secrets(ctx, u)
		return
	}
	src := upstream.SecretSource{File: u.PasswordFile, Env: u.PasswordEnv, Command: u.PasswordCommand, Credential: u.Credential,
		CommandTimeout: c.opts.Timeout, Getenv: c.opts.Getenv}
	if err := src.Validate(); err != nil {
		c.fail("secrets.source", "", err.Error(), "set exactly one of password_file, password_env, password_command, credential")
		return
	}
	switch {
	case u.PasswordFile != "":
		c.checkPasswordFile(ctx, src)
	case u.PasswordEnv != "":
		c.loadSecret(ctx, src, "password_env", "environment variable "+u.PasswordEnv+" is set",
			"set "+u.PasswordEnv+" in the environment sealpost runs with (Environment= or EnvironmentFile= in the unit) and run check with the same environment")
	case len(u.PasswordCommand) > 0:
		c.checkPasswordCommand(ctx, src)
	case u.Credential != "":
		if c.opts.Getenv("CREDENTIALS_DIRECTORY") == "" {
			c.warn("secrets.source", "credential", "credential "+u.Credential+": $CREDENTIALS_DIRECTORY is not set, so the credential can only be checked inside the unit",
				"run check the way the unit runs: systemd-run --pipe --wait -p LoadCredential="+u.Credential+":/path -p User=sealpost sealpost check")
			return
		}
		c.loadSecret(ctx, src, "credential", "systemd credential "+u.Credential+" loads", "check LoadCredential= / SetCredentialEncrypted= in the unit")
	}
}

// checkSecretInConfig: a literal password is refused at load time, so it
// can only hide in a password_command argument, where ps(1) shows it to
// every local user.
func (c *checker) checkSecretInConfig() {
	cmd := c.cfg.Upstream.PasswordCommand
	for _, arg := range cmd[min(1, len(cmd)):] {
		if argLooksSecret.MatchString(arg) {
			name, _, _ := strings.Cut(arg, "=")
			c.fail("secrets.config", "", "an argument of password_command ("+name+"=…) looks like it carries a secret; argv is visible to every local user",
				"let the command read the secret from its own store, never from its arguments")
			return
		}
	}
	c.pass("secrets.config", "", "no secret in the configuration file (a password key is refused when loading)")
}

var argLooksSecret = regexp.MustCompile(`(?i)^--?(pass(word)?|secret|token|api[-_]?key)=.`)

// loadSecret loads the secret the way serve does at start, reporting only
// whether it worked: never the value.
func (c *checker) loadSecret(ctx context.Context, src upstream.SecretSource, subject, ok, fix string) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout+time.Second)
	defer cancel()
	if _, err := src.Load(ctx); err != nil {
		c.fail("secrets.source", subject, err.Error(), fix)
		return
	}
	c.pass("secrets.source", subject, ok+" (value not shown)")
}

func (c *checker) checkPasswordFile(ctx context.Context, src upstream.SecretSource) {
	path := src.File
	fi, err := os.Stat(path)
	if err != nil {
		c.fail("secrets.source", "password_file", "password file: "+err.Error(),
			fmt.Sprintf("create it with only the password in it: install -m 600 -o %s /dev/stdin %s", c.ownerName(), path))
		return
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		c.fail("secrets.source", "password_file", fmt.Sprintf("%s has mode %04o: group or others can get at the upstream password", path, perm), "chmod 600 "+path)
		return
	}
	if uid, ok := fileOwner(fi); ok && uid != c.wantUID {
		c.warn("secrets.source", "password_file", fmt.Sprintf("%s belongs to %s, not %s: with mode %04o sealpost cannot read it unless it runs as its owner", path, describeUID(uid), c.wantWho, fi.Mode().Perm()),
			fmt.Sprintf("chown %s %s", c.ownerName(), path))
		return
	}
	c.loadSecret(ctx, src, "password_file", fmt.Sprintf("%s: mode %04o, owner %s, not empty", path, fi.Mode().Perm(), c.wantWho), "fix the file: one line, the password")
}

func (c *checker) checkPasswordCommand(ctx context.Context, src upstream.SecretSource) {
	name := src.Command[0]
	path, err := exec.LookPath(name)
	if err != nil {
		c.fail("secrets.source", "password_command", "password_command "+name+": "+err.Error(), "give the full path of an executable program")
		return
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o022 != 0 {
		c.fail("secrets.source", "password_command", fmt.Sprintf("%s is writable by group or others (mode %04o): whoever can change it gets the password", path, fi.Mode().Perm()), "chmod go-w "+path)
		return
	}
	c.loadSecret(ctx, src, "password_command", path+" is executable and printed a secret", "run the command by hand as the service user and fix what it says")
}

// ownerName is the chown argument for the user files must belong to.
func (c *checker) ownerName() string {
	if c.cfg.Check.ServiceUser != "" {
		return c.cfg.Check.ServiceUser
	}
	if u, err := user.LookupId(strconv.Itoa(c.wantUID)); err == nil {
		return u.Username
	}
	return strconv.Itoa(c.wantUID)
}

func (c *checker) checkFiles() {
	if path := c.cfg.Path; path != "" {
		fi, err := os.Stat(path)
		switch {
		case err != nil:
			c.warn("files.config", path, err.Error(), "")
		case fi.Mode().Perm()&0o022 != 0:
			c.fail("files.config", path, fmt.Sprintf("mode %04o: group or others can rewrite the configuration (and send the password to a server of their choosing)", fi.Mode().Perm()),
				"chown root:"+c.ownerName()+" "+path+" && chmod 640 "+path)
		default:
			found := fmt.Sprintf("mode %04o", fi.Mode().Perm())
			if uid, ok := fileOwner(fi); ok {
				found += ", owner " + describeUID(uid)
			}
			c.pass("files.config", path, found+"; not writable by group or others")
		}
	}

	dir := c.cfg.Spool.Dir
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.warn("files.spool", dir, "does not exist yet; serve creates it, but only if its parent is writable by the service user",
			fmt.Sprintf("install -d -m 700 -o %s %s", c.ownerName(), dir))
	case err != nil:
		c.fail("files.spool", dir, err.Error(), "")
	case !fi.IsDir():
		c.fail("files.spool", dir, "not a directory", "point spool.dir at a directory")
	default:
		uid, ok := fileOwner(fi)
		switch {
		case fi.Mode().Perm() != 0o700:
			c.fail("files.spool", dir, fmt.Sprintf("mode %04o: queued mail (bodies, addresses) must be private to sealpost", fi.Mode().Perm()), "chmod 700 "+dir)
		case ok && uid != c.wantUID:
			c.fail("files.spool", dir, fmt.Sprintf("belongs to %s, not %s: sealpost could not queue mail there", describeUID(uid), c.wantWho),
				fmt.Sprintf("chown -R %s %s", c.ownerName(), dir))
		default:
			c.pass("files.spool", dir, "mode 0700, owner "+c.wantWho)
		}
	}
}

func (c *checker) checkDKIMKeys() {
	if len(c.cfg.DKIM.Keys) == 0 {
		c.warn("dkim.keys", "", "no DKIM key: mail leaves unsigned, and Gmail and Yahoo reject or spam-folder unsigned bulk mail",
			"sealpost dkim keygen -domain example.com -selector s2026 -out /etc/sealpost/dkim/example.com.key, then add it under [[dkim.keys]]")
		return
	}
	ok := true
	for _, k := range c.cfg.DKIM.Keys {
		subject := certs.DKIMRecordName(k.Selector, k.Domain)
		_, err := certs.LoadDKIMKey(k.KeyFile)
		if err != nil {
			ok = false
			fix := "sealpost dkim keygen -domain " + k.Domain + " -selector " + k.Selector + " -out " + k.KeyFile
			if errors.Is(err, certs.ErrKeyPermissions) {
				fix = "chmod 600 " + k.KeyFile
			}
			c.fail("dkim.key", subject, err.Error(), fix)
			continue
		}
		fi, err := os.Stat(k.KeyFile)
		if err != nil {
			ok = false
			c.fail("dkim.key", subject, err.Error(), "")
			continue
		}
		if uid, owned := fileOwner(fi); owned && uid != c.wantUID {
			c.warn("dkim.key", subject, fmt.Sprintf("%s belongs to %s, not %s: with mode %04o sealpost cannot read it unless it runs as its owner", k.KeyFile, describeUID(uid), c.wantWho, fi.Mode().Perm()),
				fmt.Sprintf("chown %s %s", c.ownerName(), k.KeyFile))
			continue
		}
		c.pass("dkim.key", subject, fmt.Sprintf("%s loads; mode %04o, owner %s", k.KeyFile, fi.Mode().Perm(), c.wantWho))
	}
	if !ok {
		return
	}
	_, warns, err := loadDKIMKeys(c.cfg.DKIM)
	if err != nil {
		c.fail("dkim.algorithms", "", err.Error(), "give each key its own selector")
		return
	}
	for _, w := range warns {
		c.warn("dkim.algorithms", "", w, "sealpost dkim keygen -algo rsa … and add it as a second [[dkim.keys]] entry")
	}
	if len(warns) == 0 {
		c.pass("dkim.algorithms", "", "every signing domain has an RSA key (what Gmail and Outlook verify)")
	}
}

func (c *checker) checkPolicy() {
	if c.cfg.Policy.Mode == "report" {
		c.warn("policy.mode", "", "policy.mode = \"report\": header injection and sender rules are only logged, not enforced",
			"once the log shows no false positives (event \"flagged\"), set policy.mode = \"enforce\"")
	} else {
		c.pass("policy.mode", "", "message and sender rules are enforced")
	}
	if c.cfg.Policy.AllowAnyFrom {
		c.warn("policy.from", "", "allow_any_from = true: a compromised application can send as any domain",
			"list the domains this host sends as in allowed_from_domains and set allow_any_from = false")
	}

	var unlimited []string
	if c.cfg.Limits.PerSender.Rate.Unlimited() {
		unlimited = append(unlimited, "per_sender")
	}
	if c.cfg.Limits.PerClient.Rate.Unlimited() {
		unlimited = append(unlimited, "per_client")
	}
	if len(unlimited) > 0 {
		c.warn("policy.limits", "", "no rate limit in limits."+strings.Join(unlimited, ", limits.")+": a runaway or compromised application can burn the account's sending reputation",
			"set a rate, e.g. per_sender = { rate = \"60/m\", burst = 20 }")
	} else {
		rl := c.cfg.Limits
		c.pass("policy.limits", "", fmt.Sprintf("per_sender %s burst %d, per_client %s burst %d", rateString(rl.PerSender.Rate), rl.PerSender.Burst, rateString(rl.PerClient.Rate), rl.PerClient.Burst))
	}

	var addrs []string
	open := false
	for _, a := range c.cfg.Listen.Addrs {
		addrs = append(addrs, a.String())
		if !a.Loopback() {
			open = true
		}
	}
	switch {
	case open:
		// LoadConfig refuses this; a Config built in code could still.
		c.fail("policy.listen", "", "listening on "+strings.Join(addrs, ", ")+" beyond loopback without client AUTH over TLS: an open relay",
			"listen on 127.0.0.1 and ::1 only")
	case len(addrs) == 0:
		c.pass("policy.listen", "", "no TCP listener; submission through the socket "+c.cfg.Listen.Socket+" only")
	default:
		c.pass("policy.listen", "", "loopback only ("+strings.Join(addrs, ", ")+"): not an open relay")
	}
}

func rateString(r Rate) string {
	b, err := r.MarshalText()
	if err != nil {
		return "?"
	}
	return string(b)
}

// checkAudit: serve writes its log to standard error (journald under
// systemd), and the audit records there too unless log.audit_file is set.
func (c *checker) checkAudit() {
	fi, err := os.Stderr.Stat()
	if err != nil {
		c.fail("audit.log", "stderr", "standard error is not open: "+err.Error(),
			"run sealpost with standard error connected (systemd: StandardError=journal, the default)")
	} else if c.cfg.Log.AuditFile == "" {
		c.pass("audit.log", "stderr", "audit records go to standard error ("+fileKind(fi)+"; under systemd the journal: journalctl -u sealpost)")
	} else {
		c.pass("audit.log", "stderr", "the log goes to standard error ("+fileKind(fi)+"; under systemd the journal)")
	}
	if path := c.cfg.Log.AuditFile; path != "" {
		c.checkAuditFile(path)
	}
}

func (c *checker) checkAuditFile(path string) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		dir := filepath.Dir(path)
		di, err := os.Stat(dir)
		if err != nil {
			c.fail("audit.file", path, "its directory: "+err.Error(), fmt.Sprintf("install -d -m 750 -o %s %s", c.ownerName(), dir))
			return
		}
		if uid, ok := fileOwner(di); ok && uid != c.wantUID && di.Mode().Perm()&0o002 == 0 {
			c.warn("audit.file", path, fmt.Sprintf("does not exist yet, and its directory %s belongs to %s, not %s: serve may not be able to create it", dir, describeUID(uid), c.wantWho),
				fmt.Sprintf("install -m 640 -o %s /dev/null %s", c.ownerName(), path))
			return
		}
		c.pass("audit.file", path, "does not exist yet; serve creates it (mode 0640) in "+dir)
		return
	}
	if err != nil {
		c.fail("audit.file", path, err.Error(), "")
		return
	}
	perm := fi.Mode().Perm()
	switch uid, ok := fileOwner(fi); {
	case !fi.Mode().IsRegular():
		c.fail("audit.file", path, "not a regular file", "point log.audit_file at a file")
	case perm&0o022 != 0:
		c.fail("audit.file", path, fmt.Sprintf("mode %04o: others could rewrite the audit trail", perm), "chmod 640 "+path)
	case ok && uid != c.wantUID:
		c.warn("audit.file", path, fmt.Sprintf("belongs to %s, not %s: serve may not be able to append to it", describeUID(uid), c.wantWho),
			fmt.Sprintf("chown %s %s", c.ownerName(), path))
	case perm&0o004 != 0:
		c.warn("audit.file", path, fmt.Sprintf("mode %04o: every local user can read who mailed whom", perm), "chmod 640 "+path)
	default:
		// Opening for append (never truncating, never creating) is the
		// test of writability that also holds under ACLs and read-only mounts.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			c.fail("audit.file", path, "cannot be opened for appending: "+err.Error(), fmt.Sprintf("chown %s %s && chmod 640 %s", c.ownerName(), path, path))
			return
		}
		f.Close()
		c.pass("audit.file", path, fmt.Sprintf("writable; mode %04o, owner %s", perm, c.wantWho))
	}
}

func fileKind(fi os.FileInfo) string {
	switch m := fi.Mode(); {
	case m&os.ModeCharDevice != 0:
		return "a terminal or character device"
	case m&os.ModeNamedPipe != 0:
		return "a pipe"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m.IsRegular():
		return "a file"
	}
	return "open"
}

func (c *checker) checkBuild() {
	info := c.opts.BuildInfo
	if info == nil {
		var ok bool
		if info, ok = debug.ReadBuildInfo(); !ok {
			c.warn("build", "", "the binary carries no build information, so its Go and module versions are unknown",
				"build sealpost with module support (go build), then run govulncheck on it")
			return
		}
	}
	exe := c.opts.Executable
	if exe == "" {
		exe, _ = os.Executable()
	}
	var mods []string
	for _, d := range info.Deps {
		v := d.Version
		if d.Replace != nil {
			v = "=> " + d.Replace.Path + " " + d.Replace.Version
		}
		mods = append(mods, d.Path+" "+v)
	}
	sort.Strings(mods)
	found := fmt.Sprintf("built with %s; %d modules: %s", info.GoVersion, len(mods), strings.Join(mods, ", "))
	fix := "check for known vulnerabilities where the network allows: govulncheck -mode=binary " + exe +
		" (install: go install golang.org/x/vuln/cmd/govulncheck@latest), or in the source tree: go run golang.org/x/vuln/cmd/govulncheck@latest ./..."
	c.add("build", "", StatusPass, found, fix)
}

// nextCert returns the next CERTIFICATE in PEM data.
func nextCert(data []byte) (*x509.Certificate, []byte, bool) {
	for {
		block, rest := pem.Decode(data)
		if block == nil {
			return nil, nil, false
		}
		data = rest
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			continue
		}
		return cert, data, true
	}
}
