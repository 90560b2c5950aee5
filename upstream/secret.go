package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

const redacted = "[redacted]"

// Secret holds a password or an OAuth2 access token. Every way of printing
// it (fmt verbs, slog, encoding/json, encoding.TextMarshaler) yields
// "[redacted]"; Reveal is the only way to get the value, so a leak needs a
// visible call in the code.
//
// The value sits in an unexported field rather than being a string type so
// that reflection-based printers (%#v of an enclosing struct, encoding/json)
// cannot reach it either.
type Secret struct {
	v string
}

// NewSecret wraps a value.
func NewSecret(s string) Secret { return Secret{v: s} }

// Reveal returns the secret. Call it only where the value goes on the wire.
func (s Secret) Reveal() string { return s.v }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.v == "" }

func (Secret) String() string   { return redacted }
func (Secret) GoString() string { return redacted }

// Format makes every verb, including %#v, %q and %x, print "[redacted]".
func (Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText implements encoding.TextMarshaler (and so JSON).
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// ErrNoSecretSource is returned by SecretSource.Validate when no source is set.
var ErrNoSecretSource = errors.New("no upstream password source: set one of password_file, password_env, password_command or credential")

// Limits for reading secrets. A password file or command printing more than
// this is certainly misconfigured (pointing at the wrong file, say), and an
// unbounded read would let it exhaust memory.
const (
	maxSecretSize         = 64 << 10
	maxStderrInError      = 512
	defaultCommandTimeout = 10 * time.Second
)

// SecretSource says where the upstream password (or OAuth2 token) comes
// from. Exactly one of File, Env, Command and Credential must be set. The
// secret is loaded at each use, so a rotated password or a refreshed token
// is picked up without a restart.
type SecretSource struct {
	// File is read whole, minus the trailing newline. It must not be
	// accessible by group or others. Config key: password_file.
	File string
	// Env names an environment variable holding the secret. Config key:
	// password_env.
	Env string
	// Command is run directly (argv, no shell) and its standard output,
	// minus the trailing newline, is the secret: the hook for password
	// managers and token refreshers. Config key: password_command.
	Command []string
	// Credential names a systemd credential (LoadCredential=,
	// SetCredentialEncrypted=) read from $CREDENTIALS_DIRECTORY/NAME.
	// Config key: credential.
	Credential string

	// CommandTimeout bounds Command; zero means 10s.
	CommandTimeout time.Duration
	// Getenv replaces os.Getenv, for tests.
	Getenv func(string) string
}

// Validate checks that exactly one source is set, naming the keys in
// configuration terms.
func (s SecretSource) Validate() error {
	var set []string
	if s.File != "" {
		set = append(set, "password_file")
	}
	if s.Env != "" {
		set = append(set, "password_env")
	}
	if len(s.Command) > 0 {
		set = append(set, "password_command")
		if s.Command[0] == "" {
			return errors.New("password_command: the program name (first element) is empty")
		}
	}
	if s.Credential != "" {
		set = append(set, "credential")
		// A credential name is a file name inside the credentials
		// directory; anything that could leave it is refused.
		if strings.ContainsRune(s.Credential, '/') || s.Credential == "." || s.Credential == ".." {
			return fmt.Errorf("credential %q: must be a plain name, not a path", s.Credential)
		}
	}
	switch len(set) {
	case 0:
		return ErrNoSecretSource
	case 1:
		return nil
	default:
		return fmt.Errorf("set only one upstream password source, not %s", strings.Join(set, " and "))
	}
}

// Load fetches the secret. Errors name the source (file, variable, program)
// but never contain the secret or a command's standard output.
func (s SecretSource) Load(ctx context.Context) (Secret, error) {
	if err := s.Validate(); err != nil {
		return Secret{}, err
	}
	getenv := s.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	var (
		v    string
		what string
		err  error
	)
	switch {
	case s.File != "":
		what = "password file " + s.File
		v, err = readSecretFile(s.File, true)
	case s.Env != "":
		what = "environment variable " + s.Env
		v = getenv(s.Env)
		if v == "" {
			return Secret{}, fmt.Errorf("password_env: environment variable %s is not set or empty", s.Env)
		}
	case len(s.Command) > 0:
		what = "password_command " + s.Command[0]
		v, err = s.runCommand(ctx)
	case s.Credential != "":
		what = "credential " + s.Credential
		dir := getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return Secret{}, fmt.Errorf("credential %s: $CREDENTIALS_DIRECTORY is not set (is sealpost running under systemd with LoadCredential=%s:...?)", s.Credential, s.Credential)
		}
		// systemd makes the directory private to the unit; its files'
		// modes are systemd's business, so no permission check here.
		v, err = readSecretFile(filepath.Join(dir, s.Credential), false)
	}
	if err != nil {
		return Secret{}, err
	}
	v = strings.TrimRight(v, "\r\n")
	if v == "" {
		return Secret{}, fmt.Errorf("%s: the secret is empty", what)
	}
	return NewSecret(v), nil
}

func readSecretFile(path string, checkMode bool) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("reading secret: %w", err)
	}
	defer f.Close()
	// Stat the open file, not the path, so the mode checked is the mode of
	// what is read.
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("reading secret: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("secret file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); checkMode && perm&0o077 != 0 {
		how := "readable"
		if perm&0o044 == 0 {
			how = "accessible"
		}
		return "", fmt.Errorf("password file %s is %s by group or others (mode %04o); chmod 600 it", path, how, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxSecretSize+1))
	if err != nil {
		return "", fmt.Errorf("reading secret file %s: %w", path, err)
	}
	if len(data) > maxSecretSize {
		return "", fmt.Errorf("secret file %s is larger than %d bytes; is it the right file?", path, maxSecretSize)
	}
	return string(data), nil
}

// runCommand never passes the secret to a child (there is nothing to pass:
// the child produces it) and never puts the child's stdout in an error,
// because stdout is the secret even when the exit status says failure.
func (s SecretSource) runCommand(ctx context.Context) (string, error) {
	timeout := s.CommandTimeout
	if timeout <= 0 {
		timeout = defaultCommandTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, s.Command[0], s.Command[1:]...)
	var stdout, stderr limitedBuffer
	stdout.max, stderr.max = maxSecretSize+1, maxStderrInError
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// A grandchild that keeps the pipes open must not hang delivery.
	cmd.WaitDelay = time.Second

	name := s.Command[0]
	if err := cmd.Run(); err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return "", fmt.Errorf("password_command %s timed out after %v", name, timeout)
		}
		msg := strings.TrimSpace(stderr.String())
		if msg != "" {
			return "", fmt.Errorf("password_command %s failed: %w; stderr: %s", name, err, msg)
		}
		return "", fmt.Errorf("password_command %s failed: %w", name, err)
	}
	if stdout.Len() > maxSecretSize {
		return "", fmt.Errorf("password_command %s printed more than %d bytes", name, maxSecretSize)
	}
	return stdout.String(), nil
}

// limitedBuffer keeps the first max bytes and discards the rest, while
// still accepting writes so the child is not killed by SIGPIPE.
type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		if len(p) > room {
			b.Buffer.Write(p[:room])
		} else {
			b.Buffer.Write(p)
		}
	}
	return len(p), nil
}
