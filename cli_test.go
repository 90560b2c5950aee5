package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestEverySubcommandTakesConfig: the design promises that every
// subcommand accepts -config FILE. Each is given -config and then a flag
// it does not know, so that it stops at the second, having taken the
// first, without doing anything else.
func TestEverySubcommandTakesConfig(t *testing.T) {
	t.Parallel()
	for _, cmd := range [][]string{
		{"serve"}, {"demo"}, {"check"}, {"version"},
		{"dkim", "keygen"}, {"dkim", "records"},
		{"queue", "list"}, {"queue", "flush"},
		{"oauth2", "login"},
	} {
		t.Run(strings.Join(cmd, "_"), func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			args := append(append([]string{"sealpost"}, cmd...), "-config", "/nonexistent/relay.toml", "-no-such-flag")
			code := run(args, &stdout, &stderr)
			if strings.Contains(stderr.String(), "not defined: -config") {
				t.Errorf("-config refused:\n%s", stderr.String())
			}
			if code != exitUsage || !strings.Contains(stderr.String(), "not defined: -no-such-flag") {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d for the unknown flag after -config", code, stderr.String(), exitUsage)
			}
		})
	}
}
