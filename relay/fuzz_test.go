package relay

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseConfig: any input either loads or gives a ConfigError; it never
// panics, and a loaded configuration has passed validation.
func FuzzParseConfig(f *testing.F) {
	if src, err := os.ReadFile("../relay.example.toml"); err == nil {
		f.Add(src)
	}
	files, _ := filepath.Glob("../testdata/config/bad/*.toml")
	for _, file := range files {
		if src, err := os.ReadFile(file); err == nil {
			f.Add(src)
		}
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		cfg, err := ParseConfig("fuzz.toml", src)
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error is not a ConfigError: %T %v", err, err)
			}
			return
		}
		if err := cfg.validate(); err != nil {
			t.Fatalf("a loaded configuration fails validation: %v", err)
		}
	})
}
