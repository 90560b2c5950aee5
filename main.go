// Command sealpost is a local SMTP submission relay: legacy programs on a
// host hand it mail on loopback, and it checks, signs, spools and relays the
// mail to the organisation's provider over verified TLS.
//
// main only parses the command line, loads the configuration and wires the
// packages together; everything else lives in relay, policy, upstream,
// certs and spool.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"

	"sealpost/relay"
)

// Exit codes, from sysexits(3) where one fits, so scripts and init systems
// can tell a bad configuration from a failure at run time.
const (
	exitOK       = 0
	exitFailure  = 1
	exitUsage    = 64
	exitSoftware = 70
	exitConfig   = 78
)

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

const usage = `sealpost — a local SMTP submission relay

Usage:
  sealpost serve   [-config FILE]   run the relay (config: -config, $SEALPOST_CONFIG or ` + relay.DefaultConfigPath + `)
  sealpost demo                     run everything on loopback with an embedded upstream and print how to try it
  sealpost dkim keygen -domain D -selector S [-algo rsa|ed25519] [-bits 2048] -out FILE
                                    write a DKIM key (mode 0600) and print the DNS record to publish
  sealpost dkim records [-config FILE]
                                    print the DNS records of the configured DKIM keys
  sealpost check [-config FILE] [-live] [-json] [-offline]
                                    audit configuration, files, DNS (and with -live the upstream); exit 1 on any FAIL
  sealpost queue list|show ID|flush|delete ID [-config FILE] [-json] [-body]
                                    inspect and steer the spool (mailq = queue list)
  sealpost sendmail [-t] [-i] [-f SENDER] [-F NAME] [-bs|-bp] [-config FILE] [RCPT…]
                                    submit a message from stdin, as sendmail does (also run as "sendmail")
  sealpost oauth2 login [-config FILE] [-upstream NAME] [-out FILE]
                                    obtain an OAuth2 refresh token by the device-code flow; written mode 0600
  sealpost version                  print the version and build information

Every command takes -config FILE (the demo and version ignore it).
`

func run(args []string, stdout, stderr io.Writer) int {
	// `mailq` is a link to the binary, as with every sendmail-compatible MTA.
	if len(args) > 0 && filepath.Base(args[0]) == "mailq" {
		return cmdQueue(append([]string{"list"}, args[1:]...), stdout, stderr)
	}
	if len(args) > 0 {
		switch filepath.Base(args[0]) {
		case "sendmail":
			return cmdSendmail(args[1:], os.Stdin, stdout, stderr)
		case "newaliases":
			return exitOK // there are no aliases to rebuild
		}
	}
	if len(args) < 2 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, rest := args[1], args[2:]
	switch cmd {
	case "serve":
		return cmdServe(rest, stderr)
	case "demo":
		return cmdDemo(rest, stdout, stderr)
	case "dkim":
		return cmdDKIM(rest, stdout, stderr)
	case "check":
		return cmdCheck(rest, stdout, stderr)
	case "queue":
		return cmdQueue(rest, stdout, stderr)
	case "sendmail":
		return cmdSendmail(rest, os.Stdin, stdout, stderr)
	case "oauth2":
		return cmdOAuth2(rest, stdout, stderr)
	case "version", "-version", "--version":
		return cmdVersion(rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "sealpost: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
}

// configPath applies the precedence -config, then $SEALPOST_CONFIG, then
// the default path.
func configPath(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if env := os.Getenv("SEALPOST_CONFIG"); env != "" {
		return env
	}
	return relay.DefaultConfigPath
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("sealpost "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func cmdServe(args []string, stderr io.Writer) int {
	fs := newFlagSet("serve", stderr)
	configFlag := fs.String("config", "", "configuration file")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sealpost serve: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg, err := relay.LoadConfig(configPath(*configFlag))
	if err != nil {
		fmt.Fprintf(stderr, "sealpost: %v\n", err)
		return exitConfig
	}
	if os.Geteuid() == 0 && !cfg.RunAsRoot {
		fmt.Fprintf(stderr, "sealpost: refusing to run as root: run it as a dedicated user (the sealpost.service unit uses User=sealpost), or set run_as_root = true in %s if you must\n", cfg.Path)
		return exitConfig
	}
	logger := relay.NewLogger(stderr, cfg.Log)
	// The signals are caught before New binds the listeners: a client (or
	// systemd) that sees the port open may send SIGTERM or SIGHUP at once,
	// and must get a clean stop or a reload, not the default death.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	// New can wait on the upstream's secret (a password_command, up to
	// its 30 s timeout): ctx has a SIGTERM or Ctrl-C meanwhile kill the
	// command and stop the process at once, not after it. Nothing New
	// leaves half made needs more than the process's exit: the spool is
	// crash-safe and a stale socket is replaced at the next start.
	r, err := relay.New(cfg, relay.Options{Logger: logger, Context: ctx})
	if err != nil && ctx.Err() != nil {
		logger.Info("sealpost stopped by a signal before it began serving")
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "sealpost: %v\n", err)
		return exitConfig
	}
	reloadOnHangup(ctx, hup, cfg.Path, r, logger)
	if err := r.Run(ctx); err != nil {
		logger.Error("relay stopped with an error", slog.Any("err", err))
		return exitSoftware
	}
	return exitOK
}

// reloadOnHangup applies a changed configuration on SIGHUP (sent by
// `systemctl reload` and logrotate) without dropping sessions. A file that
// does not load keeps the running configuration, and the log says why.
func reloadOnHangup(ctx context.Context, hup <-chan os.Signal, path string, r *relay.Relay, logger *slog.Logger) {
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			// Hangup also reopens log.audit_file, for logrotate.
			if err := r.Hangup(path); err != nil {
				logger.Error("SIGHUP: the new configuration was not applied; the running one stays in force", slog.Any("err", err))
			}
		}
	}()
}

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("demo", stderr)
	listen := fs.String("listen", "127.0.0.1:2525", "loopback address for the demo relay")
	// Every subcommand takes -config (the design's promise), so that a
	// wrapper can pass it to any of them.
	fs.String("config", "", "ignored: the demo runs on an embedded configuration")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := relay.RunDemo(ctx, relay.DemoOptions{Listen: *listen, Out: stdout, Log: stderr, Command: selfCommand()})
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(stderr, "sealpost demo: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// selfCommand is how the user ran this program: "go run ." when it is a
// binary that go run built in a temporary directory.
func selfCommand() string {
	if exe := os.Args[0]; !strings.Contains(exe, "go-build") {
		return exe
	}
	return "go run ."
}

func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("version", stderr)
	fs.String("config", "", "ignored: the version needs no configuration")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sealpost version: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		fmt.Fprintln(stdout, "sealpost (no build information)")
		return exitOK
	}
	version := info.Main.Version
	if version == "" || version == "(devel)" {
		version = "devel"
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			version += " " + s.Value[:12]
		}
	}
	fmt.Fprintf(stdout, "sealpost %s (%s)\n", version, info.GoVersion)
	for _, dep := range info.Deps {
		fmt.Fprintf(stdout, "  %s %s\n", dep.Path, dep.Version)
	}
	return exitOK
}
