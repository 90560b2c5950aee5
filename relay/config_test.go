package relay

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExampleConfigLoads(t *testing.T) {
	t.Parallel()
	cfg, err := LoadConfig("../relay.example.toml")
	if err != nil {
		t.Fatalf("relay.example.toml: %v", err)
	}
	if got := cfg.Upstream.Addr; got != "smtp.example.com:587" {
		t.Errorf("upstream.addr = %q", got)
	}
	if time.Duration(cfg.Spool.MaxAge) != 5*24*time.Hour {
		t.Errorf("spool.max_age = %v, want 5d", time.Duration(cfg.Spool.MaxAge))
	}
	if cfg.Listen.MaxMessageSize != 25<<20 {
		t.Errorf("max_message_size = %d", cfg.Listen.MaxMessageSize)
	}
	if len(cfg.Listen.Addrs) != 2 || cfg.Listen.Addrs[1].String() != "[::1]:25" {
		t.Errorf("listen.addrs = %v", cfg.Listen.Addrs)
	}
	if r := cfg.Limits.PerSender; r.Rate.Events != 60 || r.Rate.Per != time.Minute || r.Burst != 20 {
		t.Errorf("per_sender = %+v", r)
	}
	if len(cfg.DKIM.Keys) != 1 || cfg.DKIM.Keys[0].Selector != "s2026" {
		t.Errorf("dkim.keys = %+v", cfg.DKIM.Keys)
	}
}

func TestDefaultsAreSafe(t *testing.T) {
	t.Parallel()
	cfg, err := ParseConfig("min.toml", []byte("hostname = \"h.example\"\n[upstream]\naddr = \"smtp.example.com:465\"\ntls = \"implicit\"\n[policy]\nallowed_from_domains = [\"example.com\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range cfg.Listen.Addrs {
		if !a.Loopback() {
			t.Errorf("default listen address %s is not loopback", a)
		}
	}
	if cfg.Upstream.MinTLSVersion != 0x0303 {
		t.Errorf("default min TLS = %#x, want TLS 1.2", cfg.Upstream.MinTLSVersion)
	}
	if cfg.RunAsRoot {
		t.Error("run_as_root defaults to true")
	}
	if cfg.Limits.PerSender.Rate.Unlimited() || cfg.Limits.PerClient.Rate.Unlimited() {
		t.Error("rate limits are off by default")
	}
	if cfg.UpstreamHost() != "smtp.example.com" {
		t.Errorf("UpstreamHost = %q", cfg.UpstreamHost())
	}
}

// TestBadConfigs drives every fixture in testdata/config/bad: each file's
// first line says which error (with key and line) it must produce.
func TestBadConfigs(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("../testdata/config/bad/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			t.Parallel()
			src, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(src), "\n")
			want, ok := strings.CutPrefix(first, "# want: ")
			if !ok {
				t.Fatalf("fixture lacks a '# want: ' first line")
			}
			_, err = LoadConfig(file)
			if err == nil {
				t.Fatalf("loaded without error; want %q", want)
			}
			if !strings.HasPrefix(err.Error(), file+":") {
				t.Errorf("error does not name the file: %v", err)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error = %q\nwant it to contain %q", err, want)
			}
		})
	}
}

func TestDurationSizeRate(t *testing.T) {
	t.Parallel()
	durations := map[string]time.Duration{"30s": 30 * time.Second, "5d": 120 * time.Hour, "1w": 168 * time.Hour, "1d12h": 36 * time.Hour, "1.5h": 90 * time.Minute}
	for in, want := range durations {
		var d Duration
		if err := d.UnmarshalText([]byte(in)); err != nil || time.Duration(d) != want {
			t.Errorf("Duration(%q) = %v, %v; want %v", in, time.Duration(d), err, want)
		}
	}
	for _, bad := range []string{"", "5", "d", "5x", "-1s", "5 d"} {
		var d Duration
		if err := d.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("Duration(%q) accepted as %v", bad, time.Duration(d))
		}
	}
	sizes := map[string]Size{"25MiB": 25 << 20, "512KiB": 512 << 10, "10MB": 10_000_000, "100": 100, "1G": 1 << 30}
	for in, want := range sizes {
		var z Size
		if err := z.UnmarshalText([]byte(in)); err != nil || z != want {
			t.Errorf("Size(%q) = %d, %v; want %d", in, z, err, want)
		}
	}
	for _, bad := range []string{"", "MiB", "-1MiB", "1.5MiB", "ten"} {
		var z Size
		if err := z.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("Size(%q) accepted as %d", bad, z)
		}
	}
	var r Rate
	if err := r.UnmarshalText([]byte("10/s")); err != nil || r.Events != 10 || r.Per != time.Second {
		t.Errorf("Rate(10/s) = %+v, %v", r, err)
	}
	if err := r.UnmarshalText([]byte("0")); err != nil || !r.Unlimited() {
		t.Errorf("Rate(0) = %+v, %v", r, err)
	}
}
