package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"sealpost/relay"
)

// checkDeps are what cmdCheck takes from the environment, so tests can run
// it against a fake DNS and a chosen identity.
type checkDeps struct {
	opts relay.CheckOptions
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	return runCheck(args, stdout, stderr, checkDeps{})
}

func runCheck(args []string, stdout, stderr io.Writer, deps checkDeps) int {
	fs := newFlagSet("check", stderr)
	configFlag := fs.String("config", "", "configuration file")
	live := fs.Bool("live", false, "also connect to the upstream: TLS, certificate, AUTH, then QUIT (no mail is sent)")
	asJSON := fs.Bool("json", false, "print the report as JSON (shape documented in README)")
	offline := fs.Bool("offline", false, "skip the DNS checks (DKIM, SPF, DMARC and reverse DNS records)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sealpost check: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg, err := relay.LoadConfig(configPath(*configFlag))
	if err != nil {
		// A configuration serve would refuse is the first FAIL; it gets the
		// same exit code as every other FAIL, and the reason on stderr.
		fmt.Fprintf(stderr, "sealpost check: FAIL: %v\n", err)
		if *asJSON {
			writeJSON(stdout, relay.Report{Format: relay.ReportFormat, Config: configPath(*configFlag), Counts: relay.Counts{Fail: 1},
				Findings: []relay.Finding{{ID: "config", Status: relay.StatusFail, Found: err.Error(), Fix: "fix the configuration file (relay.example.toml documents every key)"}}})
		}
		return exitFailure
	}

	opts := deps.opts
	opts.DNS, opts.Live = !*offline, *live
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	report := relay.Check(ctx, cfg, opts)

	if *asJSON {
		writeJSON(stdout, report)
	} else {
		writeText(stdout, report)
	}
	if !report.OK {
		return exitFailure
	}
	return exitOK
}

func writeJSON(w io.Writer, r relay.Report) {
	if r.Findings == nil {
		r.Findings = []relay.Finding{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	_ = enc.Encode(r)
}

// ANSI colours for the status word, used only on a terminal.
var statusColour = map[relay.Status]string{
	relay.StatusPass: "\x1b[32m",
	relay.StatusWarn: "\x1b[33m",
	relay.StatusFail: "\x1b[1;31m",
}

// writeText prints one line per finding: status, check (and subject), what
// was found and, after "→", how to fix it.
func writeText(w io.Writer, r relay.Report) {
	colour := relay.IsTerminal(w) && os.Getenv("NO_COLOR") == ""
	for _, f := range r.Findings {
		status := string(f.Status)
		if colour {
			status = statusColour[f.Status] + status + "\x1b[0m"
		}
		name := f.ID
		if f.Subject != "" {
			name += " " + f.Subject
		}
		line := status + "  " + name + ": " + f.Found
		if f.Fix != "" {
			line += " → " + f.Fix
		}
		fmt.Fprintln(w, strings.ReplaceAll(line, "\n", " "))
	}
	scope := "offline checks"
	if r.DNS {
		scope += ", DNS"
	}
	if r.Live {
		scope += ", live upstream"
	}
	verdict := "no FAIL: ready"
	if !r.OK {
		verdict = "not ready: fix every FAIL"
	}
	fmt.Fprintf(w, "%d PASS, %d WARN, %d FAIL (%s) — %s\n", r.Counts.Pass, r.Counts.Warn, r.Counts.Fail, scope, verdict)
}
