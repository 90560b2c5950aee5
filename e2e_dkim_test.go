package main

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"sealpost/certs"
	"sealpost/certs/certstest"
	"sealpost/upstream/upstreamtest"
)

// TestSwaksThroughServeIsDKIMSigned: a message submitted with swaks reaches
// the provider signed for its header From domain, with every configured
// key, and the signatures verify against the records keygen would print.
func TestSwaksThroughServeIsDKIMSigned(t *testing.T) {
	needSwaks(t)
	t.Parallel()
	for _, algos := range [][]string{{"rsa"}, {"ed25519"}, {"ed25519", "rsa"}} {
		t.Run(strings.Join(algos, "+"), func(t *testing.T) {
			t.Parallel()
			ca := certstest.NewCA(t)
			up := upstreamtest.New(t, upstreamtest.Options{
				TLS:         upstreamtest.TLSStartTLS,
				Certificate: certstest.Leaf(t, ca, "127.0.0.1"),
				Users:       map[string]string{e2eUser: e2ePassword},
			})
			setup := newSetup(t, ca.CertPEM())
			records := map[string]string{}
			var extra strings.Builder
			for _, algo := range algos {
				key, err := certs.GenerateDKIMKey(algo, 0)
				if err != nil {
					t.Fatal(err)
				}
				keyFile := filepath.Join(setup.dir, algo+".key")
				if err := certs.WriteDKIMKey(keyFile, key); err != nil {
					t.Fatal(err)
				}
				record, err := certs.DKIMRecord(key.Public())
				if err != nil {
					t.Fatal(err)
				}
				selector := "s-" + algo
				records[certs.DKIMRecordName(selector, "example.com")] = record
				fmt.Fprintf(&extra, "[[dkim.keys]]\ndomain = \"example.com\"\nselector = %q\nkey_file = %q\n\n", selector, keyFile)
			}
			listen := freePort(t)
			d := startServe(t, setup.writeConfig(t, listen, up.Addr(), extra.String()), listen)

			out := swaks(t, listen, "--from", "cron@example.com", "--to", "ops@example.net",
				"--header", "Subject: nightly backup done", "--body", "backup of /srv finished: 41 GiB")
			if !queuedAs.MatchString(out) {
				t.Fatalf("swaks did not get 250 with a queue id:\n%s\n%s", out, d.stderr)
			}
			got := up.Expect(t, 1)[0]
			verifyDelivered(t, got.Data, records, len(algos))
		})
	}
}

// verifyDelivered checks that data carries n signatures, RSA first, that
// all verify for example.com, and that they sit below the relay's Received
// field and above the original header fields.
func verifyDelivered(t *testing.T, data []byte, records map[string]string, n int) {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(data), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if r, ok := records[strings.TrimSuffix(name, ".")]; ok {
				return []string{r}, nil
			}
			return nil, fmt.Errorf("no TXT record at %s", name)
		},
	})
	if err != nil {
		t.Fatalf("verify: %v\n%s", err, data)
	}
	if len(vs) != n {
		t.Fatalf("upstream got %d DKIM signatures, want %d:\n%s", len(vs), n, data)
	}
	for i, v := range vs {
		if v.Err != nil || v.Domain != "example.com" {
			t.Errorf("signature %d: d=%s: %v", i, v.Domain, v.Err)
		}
	}

	header, _, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	var names []string
	var firstAlgo string
	for _, line := range strings.Split(string(header), "\r\n") {
		if line == "" || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		names = append(names, strings.ToLower(name))
		if firstAlgo == "" && strings.EqualFold(name, "DKIM-Signature") {
			firstAlgo = value
		}
	}
	received, firstSig, lastSig, firstOriginal := -1, -1, -1, -1
	for i, name := range names {
		switch name {
		case "received":
			if received < 0 {
				received = i
			}
		case "dkim-signature":
			if firstSig < 0 {
				firstSig = i
			}
			lastSig = i
		case "from", "to", "subject", "date", "message-id":
			if firstOriginal < 0 {
				firstOriginal = i
			}
		}
	}
	if received < 0 || received > firstSig || lastSig > firstOriginal {
		t.Errorf("want Received, then DKIM-Signature, then the original fields; got %v", names)
	}
	if n > 1 && !strings.Contains(firstAlgo, "a=rsa-sha256") {
		t.Errorf("first signature is not the RSA one: %q", firstAlgo)
	}
}
