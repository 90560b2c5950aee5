package main

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"sealpost/certs"
	"sealpost/relay"
)

// exitCantCreate is sysexits' EX_CANTCREAT: the output file cannot be
// created (here, mostly: it already exists and a key is never overwritten).
const exitCantCreate = 73

const dkimUsage = `Usage:
  sealpost dkim keygen -domain D -selector S [-algo rsa|ed25519] [-bits 2048] -out FILE
        write a new signing key (mode 0600, never overwriting) and print the DNS TXT record to publish
  sealpost dkim records [-config FILE]
        print the DNS TXT records of the keys in the configuration
`

func cmdDKIM(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "sealpost dkim: missing subcommand\n\n"+dkimUsage)
		return exitUsage
	}
	switch args[0] {
	case "keygen":
		return cmdDKIMKeygen(args[1:], stdout, stderr)
	case "records":
		return cmdDKIMRecords(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, dkimUsage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "sealpost dkim: unknown subcommand %q\n\n%s", args[0], dkimUsage)
		return exitUsage
	}
}

func cmdDKIMKeygen(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("dkim keygen", stderr)
	domain := fs.String("domain", "", "the domain the key signs for (the header From domain), e.g. example.com")
	selector := fs.String("selector", "", "the selector naming this key in DNS, e.g. s2026")
	algo := fs.String("algo", "rsa", `"rsa" or "ed25519"`)
	bits := fs.Int("bits", 2048, "RSA key size, 2048 to 4096")
	out := fs.String("out", "", "file to write the private key to (must not exist)")
	// Every subcommand accepts -config (DESIGN.md); keygen needs none.
	fs.String("config", "", "ignored: keygen reads no configuration")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "sealpost dkim keygen: "+format+"\n\n", a...)
		fs.Usage()
		return exitUsage
	}
	switch {
	case fs.NArg() > 0:
		return usageErr("unexpected argument %q", fs.Arg(0))
	case *domain == "":
		return usageErr("-domain is required")
	case !validDKIMDomain(*domain):
		return usageErr("-domain %q is not a domain name", *domain)
	case *selector == "":
		return usageErr("-selector is required")
	case !validDKIMSelector(*selector):
		return usageErr("-selector %q: use letters, digits, hyphens and dots", *selector)
	case *out == "":
		return usageErr("-out is required")
	}
	switch *algo {
	case "rsa":
		if *bits < 2048 || *bits > 4096 {
			return usageErr("-bits %d: RSA keys for DKIM are 2048 to 4096 bits", *bits)
		}
	case "ed25519":
		if flagSet(fs, "bits") {
			return usageErr("-bits applies to RSA keys only")
		}
		*bits = 0
	default:
		return usageErr("-algo %q: use rsa or ed25519", *algo)
	}
	*domain = strings.ToLower(strings.TrimSuffix(*domain, "."))

	key, err := certs.GenerateDKIMKey(*algo, *bits)
	if err != nil {
		fmt.Fprintf(stderr, "sealpost dkim keygen: %v\n", err)
		return exitSoftware
	}
	record, err := certs.DKIMRecord(key.Public())
	if err != nil {
		fmt.Fprintf(stderr, "sealpost dkim keygen: %v\n", err)
		return exitSoftware
	}
	if err := certs.WriteDKIMKey(*out, key); err != nil {
		// EX_CANTCREAT both for an existing file and for a directory
		// that cannot be written: either way the output is what failed.
		fmt.Fprintf(stderr, "sealpost dkim keygen: %v\n", err)
		return exitCantCreate
	}
	keyFile := *out
	if abs, err := filepath.Abs(keyFile); err == nil {
		keyFile = abs
	}
	fmt.Fprintf(stdout, "wrote a %s key to %s (mode 0600)\n\n", keyDescription(key), keyFile)
	printRecord(stdout, *selector, *domain, record)
	fmt.Fprintf(stdout, "\nPublish the record, check it with `dig +short TXT %s`, then add to the configuration:\n"+
		"[[dkim.keys]]\ndomain = %q\nselector = %q\nkey_file = %q\n",
		certs.DKIMRecordName(*selector, *domain), *domain, *selector, keyFile)
	return exitOK
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

// printRecord prints a record in the three forms DNS tools ask for: the
// plain value (control panels that split it themselves), the value as
// quoted 255-byte strings, and a zone-file line.
func printRecord(w io.Writer, selector, domain, record string) {
	quoted := make([]string, 0, 2)
	for _, s := range certs.SplitTXT(record) {
		quoted = append(quoted, certs.QuoteTXT(s))
	}
	fmt.Fprintf(w, "name:   %s\n", certs.DKIMRecordName(selector, domain))
	fmt.Fprintf(w, "type:   TXT\n")
	fmt.Fprintf(w, "value:  %s\n", record)
	fmt.Fprintf(w, "quoted: %s\n", strings.Join(quoted, " "))
	fmt.Fprintf(w, "zone:   %s\n", certs.ZoneLine(selector, domain, record))
}

func keyDescription(k crypto.Signer) string {
	switch pub := k.Public().(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("%d-bit RSA", pub.N.BitLen())
	case ed25519.PublicKey:
		return "Ed25519"
	default:
		return fmt.Sprintf("%T", pub)
	}
}

func cmdDKIMRecords(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("dkim records", stderr)
	configFlag := fs.String("config", "", "configuration file")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sealpost dkim records: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg, err := relay.LoadConfig(configPath(*configFlag))
	if err != nil {
		fmt.Fprintf(stderr, "sealpost: %v\n", err)
		return exitConfig
	}
	if len(cfg.DKIM.Keys) == 0 {
		fmt.Fprintf(stderr, "sealpost dkim records: %s has no [[dkim.keys]]; create a key with `sealpost dkim keygen`\n", cfg.Path)
		return exitOK
	}
	code := exitOK
	rsaDomains := map[string]bool{}
	for i, k := range cfg.DKIM.Keys {
		signer, err := certs.LoadDKIMKey(k.KeyFile)
		if err != nil {
			// Go on: the admin wants every broken key named in one run.
			fmt.Fprintf(stderr, "sealpost: %s: dkim.keys[%d]: %v\n", cfg.Path, i, err)
			code = exitConfig
			continue
		}
		record, err := certs.DKIMRecord(signer.Public())
		if err != nil {
			fmt.Fprintf(stderr, "sealpost: %s: dkim.keys[%d]: %s: %v\n", cfg.Path, i, k.KeyFile, err)
			code = exitConfig
			continue
		}
		if _, ok := signer.Public().(*rsa.PublicKey); ok {
			rsaDomains[k.Domain] = true
		} else if _, seen := rsaDomains[k.Domain]; !seen {
			rsaDomains[k.Domain] = false
		}
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		fmt.Fprintf(stdout, "# dkim.keys[%d]: %s, %s key in %s\n", i, k.Domain, keyDescription(signer), k.KeyFile)
		printRecord(stdout, k.Selector, k.Domain, record)
	}
	for _, k := range cfg.DKIM.Keys {
		if hasRSA, ok := rsaDomains[k.Domain]; ok && !hasRSA {
			fmt.Fprintf(stderr, "sealpost: warning: Gmail and Outlook do not yet verify Ed25519 alone; add an RSA key for %s (dual signing, RFC 8463)\n", k.Domain)
			delete(rsaDomains, k.Domain)
		}
	}
	return code
}

// validDKIMDomain is a light check: the name ends up in DNS and in d=, so
// it must be host-name shaped; relay's config validation is the full one.
func validDKIMDomain(d string) bool {
	d = strings.TrimSuffix(d, ".")
	if d == "" || len(d) > 253 || !strings.Contains(d, ".") {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !isAlnum(c) && c != '-' {
				return false
			}
		}
	}
	return true
}

func validDKIMSelector(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for _, c := range s {
		if !isAlnum(c) && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

func isAlnum(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
