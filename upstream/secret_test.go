package upstream_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sealpost/upstream"
)

const secretValue = "s3cr3t-Value-9182"

func TestSecretNeverPrints(t *testing.T) {
	t.Parallel()
	s := upstream.NewSecret(secretValue)
	holder := struct {
		User   string
		Secret upstream.Secret
	}{"u", s}

	var outputs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
		outputs = append(outputs, fmt.Sprintf(verb, s), fmt.Sprintf(verb, holder), fmt.Sprintf(verb, &holder))
	}
	outputs = append(outputs, s.String(), s.GoString(), fmt.Sprint(s), fmt.Sprintln(s))
	j, err := json.Marshal(holder)
	if err != nil {
		t.Fatal(err)
	}
	outputs = append(outputs, string(j))
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "secret", s, "holder", holder)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "secret", s, "holder", holder)
	outputs = append(outputs, buf.String())

	for _, out := range outputs {
		if strings.Contains(out, secretValue) || strings.Contains(out, fmt.Sprintf("%x", secretValue)) {
			t.Errorf("secret leaked: %s", out)
		}
	}
	if !strings.Contains(buf.String(), `"secret":"[redacted]"`) || !strings.Contains(string(j), "[redacted]") {
		t.Errorf("redaction marker missing: %s / %s", buf.String(), j)
	}
	if s.Reveal() != secretValue || s.IsZero() || !upstream.NewSecret("").IsZero() {
		t.Error("Reveal/IsZero")
	}
}

func writeFile(t *testing.T, mode os.FileMode, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // umask-proof
		t.Fatal(err)
	}
	return path
}

func noEnv(string) string { return "" }

func TestSecretSourceLoad(t *testing.T) {
	t.Parallel()
	credDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(credDir, "upstream"), []byte(secretValue), 0o400); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"SEALPOST_PW": secretValue, "CREDENTIALS_DIRECTORY": credDir}
	getenv := func(k string) string { return env[k] }

	tests := []struct {
		name string
		src  upstream.SecretSource
	}{
		{name: "file 0600", src: upstream.SecretSource{File: writeFile(t, 0o600, secretValue+"\n")}},
		{name: "file 0400 CRLF", src: upstream.SecretSource{File: writeFile(t, 0o400, secretValue+"\r\n")}},
		{name: "env", src: upstream.SecretSource{Env: "SEALPOST_PW", Getenv: getenv}},
		{name: "command", src: upstream.SecretSource{Command: []string{"/bin/sh", "-c", "printf '%s\\n' " + secretValue}}},
		{name: "credential", src: upstream.SecretSource{Credential: "upstream", Getenv: getenv}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := tt.src.Validate(); err != nil {
				t.Fatal(err)
			}
			s, err := tt.src.Load(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if s.Reveal() != secretValue {
				t.Errorf("loaded %q", s.Reveal())
			}
		})
	}
}

func TestSecretSourceErrors(t *testing.T) {
	t.Parallel()
	missingCredDir := func(k string) string { return "" }
	tests := []struct {
		name     string
		src      upstream.SecretSource
		want     []string
		is       error
		validate bool // the error comes from Validate already
	}{
		{name: "none", src: upstream.SecretSource{}, want: []string{"password_file", "password_env", "password_command", "credential"}, is: upstream.ErrNoSecretSource, validate: true},
		{name: "two", src: upstream.SecretSource{File: "/x", Env: "Y"}, want: []string{"password_file", "password_env"}, validate: true},
		{name: "four", src: upstream.SecretSource{File: "/x", Env: "Y", Command: []string{"z"}, Credential: "c"}, want: []string{"password_command", "credential"}, validate: true},
		{name: "credential path", src: upstream.SecretSource{Credential: "../etc/shadow"}, want: []string{"plain name"}, validate: true},
		{name: "file 0644", src: upstream.SecretSource{File: writeFile(t, 0o644, secretValue)}, want: []string{"readable by group or others (mode 0644); chmod 600 it"}},
		{name: "file 0640", src: upstream.SecretSource{File: writeFile(t, 0o640, secretValue)}, want: []string{"mode 0640"}},
		{name: "file 0620", src: upstream.SecretSource{File: writeFile(t, 0o620, secretValue)}, want: []string{"accessible by group or others (mode 0620)"}},
		{name: "file missing", src: upstream.SecretSource{File: "/nonexistent/sealpost-pw"}, want: []string{"/nonexistent/sealpost-pw"}, is: os.ErrNotExist},
		{name: "file empty", src: upstream.SecretSource{File: writeFile(t, 0o600, "\n")}, want: []string{"empty"}},
		{name: "directory", src: upstream.SecretSource{File: t.TempDir()}, want: []string{"not a regular file"}},
		{name: "env unset", src: upstream.SecretSource{Env: "SEALPOST_NOPE", Getenv: noEnv}, want: []string{"SEALPOST_NOPE", "not set"}},
		{name: "command fails", src: upstream.SecretSource{Command: []string{"/bin/sh", "-c", "echo " + secretValue + "; echo 'vault: permission denied' >&2; exit 3"}}, want: []string{"/bin/sh", "exit status 3", "vault: permission denied"}},
		{name: "command missing", src: upstream.SecretSource{Command: []string{"/nonexistent/pw-helper"}}, want: []string{"/nonexistent/pw-helper"}},
		{name: "command empty output", src: upstream.SecretSource{Command: []string{"/bin/sh", "-c", "true"}}, want: []string{"empty"}},
		{name: "command timeout", src: upstream.SecretSource{Command: []string{"/bin/sh", "-c", "echo " + secretValue + "; sleep 10"}, CommandTimeout: 100 * time.Millisecond}, want: []string{"timed out"}},
		{name: "credential without systemd", src: upstream.SecretSource{Credential: "upstream", Getenv: missingCredDir}, want: []string{"CREDENTIALS_DIRECTORY"}},
		{name: "credential missing", src: upstream.SecretSource{Credential: "upstream", Getenv: func(string) string { return t.TempDir() }}, is: os.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			verr := tt.src.Validate()
			if tt.validate != (verr != nil) {
				t.Errorf("Validate() = %v, want error: %v", verr, tt.validate)
			}
			_, err := tt.src.Load(context.Background())
			if err == nil {
				t.Fatal("Load succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q does not wrap %v", err, tt.is)
			}
			if strings.Contains(err.Error(), secretValue) {
				t.Errorf("error contains the secret: %q", err)
			}
		})
	}
}

// TestSecretLoadedPerDelivery: Config.Secret is called for each Deliver, so
// a rotated password file is picked up without a restart.
func TestSecretSourceRereads(t *testing.T) {
	t.Parallel()
	path := writeFile(t, 0o600, "first")
	src := upstream.SecretSource{File: path}
	s1, err := src.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("second\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s2, err := src.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s1.Reveal() != "first" || s2.Reveal() != "second" {
		t.Errorf("loaded %q then %q", s1.Reveal(), s2.Reveal())
	}
}
