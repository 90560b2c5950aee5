package relay

import (
	"bytes"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"sealpost/certs"
)

// testKeys are generated per test: no key material lives in the repo.
type testKeys struct {
	rsa, ed   crypto.Signer
	rsaR, edR string
}

func newTestKeys(t testing.TB) *testKeys {
	t.Helper()
	var k testKeys
	var err error
	if k.rsa, err = certs.GenerateDKIMKey("rsa", 2048); err != nil {
		t.Fatal(err)
	}
	if k.ed, err = certs.GenerateDKIMKey("ed25519", 0); err != nil {
		t.Fatal(err)
	}
	if k.rsaR, err = certs.DKIMRecord(k.rsa.Public()); err != nil {
		t.Fatal(err)
	}
	if k.edR, err = certs.DKIMRecord(k.ed.Public()); err != nil {
		t.Fatal(err)
	}
	return &k
}

// writeKey writes signer to a fresh 0600 file and returns its path.
func writeKey(t testing.TB, signer crypto.Signer) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dkim.key")
	if err := certs.WriteDKIMKey(path, signer); err != nil {
		t.Fatal(err)
	}
	return path
}

// keySetup names one signing configuration used across tests: the keys it
// configures and the DNS records a verifier would find.
type keySetup struct {
	name    string
	cfg     DKIMConfig
	records map[string]string // DNS name → TXT
	algos   []string          // expected a= in signature order
}

func keySetups(t testing.TB, k *testKeys) []keySetup {
	t.Helper()
	rsaFile, edFile := writeKey(t, k.rsa), writeKey(t, k.ed)
	return []keySetup{
		{
			name:    "rsa2048",
			cfg:     DKIMConfig{Keys: []DKIMKey{{Domain: "example.com", Selector: "r1", KeyFile: rsaFile}}},
			records: map[string]string{"r1._domainkey.example.com": k.rsaR},
			algos:   []string{algoRSA},
		},
		{
			name:    "ed25519",
			cfg:     DKIMConfig{Keys: []DKIMKey{{Domain: "example.com", Selector: "e1", KeyFile: edFile}}},
			records: map[string]string{"e1._domainkey.example.com": k.edR},
			algos:   []string{algoEd25519},
		},
		{
			// Ed25519 listed first on purpose: the RSA signature must still
			// come out first.
			name: "dual",
			cfg: DKIMConfig{Keys: []DKIMKey{
				{Domain: "example.com", Selector: "e1", KeyFile: edFile},
				{Domain: "example.com", Selector: "r1", KeyFile: rsaFile},
			}},
			records: map[string]string{"e1._domainkey.example.com": k.edR, "r1._domainkey.example.com": k.rsaR},
			algos:   []string{algoRSA, algoEd25519},
		},
	}
}

func mustLoad(t testing.TB, cfg DKIMConfig) *dkimKeys {
	t.Helper()
	keys, _, err := loadDKIMKeys(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

var fieldName = regexp.MustCompile(`(?m)^([!-9;-~]+):`)

// fieldNames lists the header field names of msg, in order, the way the
// session hands them to newSigning.
func fieldNames(msg []byte) []string {
	header := msg
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		header = msg[:i+2]
	}
	var names []string
	for _, m := range fieldName.FindAllSubmatch(header, -1) {
		names = append(names, string(m[1]))
	}
	return names
}

// sign signs msg, writing it in chunks of chunk bytes to exercise the
// streaming path, and returns the signature fields followed by msg.
func sign(t testing.TB, keys *dkimKeys, msg []byte, chunk int) []byte {
	t.Helper()
	s, err := keys.newSigning("example.com", fieldNames(msg), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if s == nil {
		t.Fatal("newSigning returned no signing for example.com")
	}
	for rest := msg; len(rest) > 0; {
		n := min(chunk, len(rest))
		if w, err := s.Write(rest[:n]); err != nil || w != n {
			t.Fatalf("Write: %d, %v", w, err)
		}
		rest = rest[n:]
	}
	sigs, err := s.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return append(sigs, msg...)
}

func lookup(records map[string]string) func(string) ([]string, error) {
	return func(name string) ([]string, error) {
		if r, ok := records[strings.TrimSuffix(name, ".")]; ok {
			return []string{r}, nil // the resolver joins a record's strings
		}
		return nil, fmt.Errorf("no TXT record at %s", name)
	}
}

// verifyGo returns one error (nil when valid) per signature, in order.
func verifyGo(t testing.TB, signed []byte, records map[string]string) []error {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(signed), &dkim.VerifyOptions{LookupTXT: lookup(records)})
	if err != nil {
		t.Fatalf("go-msgauth: %v", err)
	}
	errs := make([]error, len(vs))
	for i, v := range vs {
		errs[i] = v.Err
	}
	return errs
}

const pyVerify = `
import json, sys
import dkim
records = json.loads(sys.argv[1])
count = int(sys.argv[2])
msg = sys.stdin.buffer.read()
def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    r = records.get(name.rstrip("."))
    return r.encode() if r is not None else None
for i in range(count):
    try:
        ok = dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc)
        print("ok" if ok else "fail")
    except Exception as e:
        print("error: %s: %s" % (type(e).__name__, e))
`

// needPythonDKIM skips when Debian's python3-dkim is missing; the pyenv
// python3 on PATH has no dkim module, hence the fixed path.
func needPythonDKIM(t testing.TB) {
	t.Helper()
	if err := exec.Command("/usr/bin/python3", "-c", "import dkim, nacl.signing").Run(); err != nil {
		t.Skipf("/usr/bin/python3 cannot import dkim and nacl (apt-get install python3-dkim python3-nacl): %v", err)
	}
}

// verifyPython returns "ok", "fail" or "error: …" per signature, from
// python3-dkim, an implementation independent of go-msgauth.
func verifyPython(t testing.TB, signed []byte, records map[string]string, count int) []string {
	t.Helper()
	recs, _ := json.Marshal(records)
	cmd := exec.Command("/usr/bin/python3", "-c", pyVerify, string(recs), fmt.Sprint(count))
	cmd.Stdin = bytes.NewReader(signed)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3-dkim: %v\n%s", err, stderr.String())
	}
	return strings.Fields(strings.ReplaceAll(strings.TrimSpace(string(out)), " ", "_"))
}

func readFixtures(t testing.TB) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob("../testdata/dkim/*.eml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no fixtures in ../testdata/dkim: %v", err)
	}
	msgs := make(map[string][]byte, len(paths))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		msgs[filepath.Base(p)] = b
	}
	return msgs
}

func TestSignVerifiesWithGoMsgauthAndPythonDKIM(t *testing.T) {
	t.Parallel()
	fixtures := readFixtures(t)
	python := exec.Command("/usr/bin/python3", "-c", "import dkim, nacl.signing").Run() == nil
	for _, ks := range keySetups(t, newTestKeys(t)) {
		keys := mustLoad(t, ks.cfg)
		for name, msg := range fixtures {
			for _, chunk := range []int{1, 7, 4096} {
				t.Run(fmt.Sprintf("%s/%s/chunk%d", ks.name, name, chunk), func(t *testing.T) {
					t.Parallel()
					signed := sign(t, keys, msg, chunk)
					errs := verifyGo(t, signed, ks.records)
					if len(errs) != len(ks.algos) {
						t.Fatalf("go-msgauth found %d signatures, want %d:\n%s", len(errs), len(ks.algos), signed)
					}
					for i, err := range errs {
						if err != nil {
							t.Errorf("go-msgauth: signature %d: %v\n%s", i, err, signed)
						}
					}
					if chunk != 4096 {
						return // the independent verifier needs to see each message once
					}
					if !python {
						t.Skip("/usr/bin/python3 cannot import dkim and nacl")
					}
					res := verifyPython(t, signed, ks.records, len(ks.algos))
					if want := slices.Repeat([]string{"ok"}, len(ks.algos)); !slices.Equal(res, want) {
						t.Errorf("python3-dkim: %v, want %v\n%s", res, want, signed)
					}
				})
			}
		}
	}
}

func TestSignatureFields(t *testing.T) {
	t.Parallel()
	msg := readFixtures(t)["plain.eml"]
	for _, ks := range keySetups(t, newTestKeys(t)) {
		t.Run(ks.name, func(t *testing.T) {
			t.Parallel()
			cfg := ks.cfg
			cfg.Expiration = Duration(7 * 24 * time.Hour)
			keys := mustLoad(t, cfg)
			s, err := keys.newSigning("Example.COM", fieldNames(msg), time.Now())
			if err != nil || s == nil {
				t.Fatalf("newSigning: %v, %v", s, err)
			}
			s.Write(msg)
			sigs, err := s.Finish()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Finish(); err == nil {
				t.Error("a second Finish succeeded")
			}
			if !bytes.HasSuffix(sigs, []byte("\r\n")) {
				t.Errorf("signature block does not end in CRLF: %q", sigs)
			}
			fields := splitFields(t, sigs)
			if len(fields) != len(ks.algos) {
				t.Fatalf("%d fields, want %d:\n%s", len(fields), len(ks.algos), sigs)
			}
			for i, f := range fields {
				if !strings.HasPrefix(f, "DKIM-Signature:") {
					t.Errorf("field %d does not start with DKIM-Signature: %q", i, f)
				}
				for _, line := range strings.Split(strings.TrimSuffix(f, "\r\n"), "\r\n") {
					if strings.ContainsAny(line, "\r\n") || len(line) > 998 {
						t.Errorf("malformed line in field %d: %q", i, line)
					}
				}
				tags := sigTags(f)
				wantTags := map[string]string{
					"a": ks.algos[i], "c": "relaxed/relaxed", "d": "example.com", "v": "1",
					"h": "From:From:To:To:Subject:Subject:Date:Message-ID:MIME-Version:Content-Type:Cc",
				}
				for tag, want := range wantTags {
					if got := tags[tag]; !sameFieldList(got, want, tag) {
						t.Errorf("field %d: %s=%q, want %q", i, tag, got, want)
					}
				}
				if _, ok := tags["i"]; ok {
					t.Errorf("field %d has an i= tag", i)
				}
				var ts, xs int64
				fmt.Sscan(tags["t"], &ts)
				fmt.Sscan(tags["x"], &xs)
				if d := xs - ts; d < 7*24*3600-60 || d > 7*24*3600+60 {
					t.Errorf("field %d: x=%q t=%q, want x about t+7d", i, tags["x"], tags["t"])
				}
			}
			errs := verifyGo(t, append(sigs, msg...), ks.records)
			for i, err := range errs {
				if err != nil {
					t.Errorf("signature %d: %v", i, err)
				}
			}
		})
	}
}

// splitFields cuts a block of header fields at each line that does not
// start with white space.
func splitFields(t *testing.T, block []byte) []string {
	t.Helper()
	var fields []string
	for _, line := range strings.SplitAfter(string(block), "\r\n") {
		if line == "" {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(fields) == 0 {
				t.Fatalf("block starts with a continuation line: %q", block)
			}
			fields[len(fields)-1] += line
			continue
		}
		fields = append(fields, line)
	}
	return fields
}

func sigTags(field string) map[string]string {
	_, value, _ := strings.Cut(field, ":")
	tags := map[string]string{}
	for _, kv := range strings.Split(value, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		v = strings.Join(strings.Fields(v), "")
		tags[strings.TrimSpace(k)] = v
	}
	return tags
}

// sameFieldList compares h= as multisets: the order of names in h= is free.
func sameFieldList(got, want, tag string) bool {
	if tag != "h" {
		return got == want
	}
	g, w := strings.Split(strings.ToLower(got), ":"), strings.Split(strings.ToLower(want), ":")
	slices.Sort(g)
	slices.Sort(w)
	return slices.Equal(g, w)
}

func TestHeaderKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		present []string
		want    string
	}{
		{nil, "From To Cc Subject"},
		{[]string{"From", "To", "Subject", "Date"}, "From From To To Cc Subject Subject Date"},
		{[]string{"from", "TO", "cc", "Cc", "X-Mailer", "Received", "List-Unsubscribe", "List-Unsubscribe-Post"},
			"From From To To Cc Cc Cc Subject List-Unsubscribe List-Unsubscribe-Post"},
		{[]string{"From", "References", "References", "In-Reply-To", "Reply-To", "Content-Transfer-Encoding"},
			"From From To Cc Subject Reply-To Content-Transfer-Encoding In-Reply-To References References"},
		{[]string{"DKIM-Signature", "Bcc", "Return-Path", "Sender"}, "From To Cc Subject"},
	}
	for _, tt := range tests {
		if got := strings.Join(headerKeys(tt.present), " "); got != tt.want {
			t.Errorf("headerKeys(%q) = %q, want %q", tt.present, got, tt.want)
		}
	}
}

// TestTamperingBreaksSignature: each change a forwarder or attacker could
// make after signing must fail verification, and the changes the relay
// itself makes (a Received field on top) must not.
func TestTamperingBreaksSignature(t *testing.T) {
	t.Parallel()
	fixtures := readFixtures(t)
	python := exec.Command("/usr/bin/python3", "-c", "import dkim, nacl.signing").Run() == nil
	tests := []struct {
		name, fixture string
		edit          func(signed []byte) []byte
		valid         bool
	}{
		{"body changed", "plain.eml", replace("41 GiB", "42 GiB"), false},
		{"line added to body", "plain.eml", appendBytes("P.S. wire money\r\n"), false},
		{"signed field changed", "plain.eml", replace("Subject: nightly backup", "Subject: nightly backup FAILED"), false},
		{"second From added", "plain.eml", insertBeforeField("From:", "From: ceo@example.com\r\n"), false},
		{"second From added below", "plain.eml", insertBeforeField("To:", "From: ceo@example.com\r\n"), false},
		{"Subject added where none was", "no-subject.eml", insertBeforeField("From:", "Subject: urgent invoice\r\n"), false},
		{"Cc added", "plain.eml", insertBeforeField("Subject:", "Cc: victim@example.org\r\n"), false},
		{"second To added", "plain.eml", insertBeforeField("Date:", "To: other@example.org\r\n"), false},
		{"Received prepended", "plain.eml", prependField("Received: from relay by mx; Tue, 03 Mar 2026 02:00:02 +0000\r\n"), true},
		{"unsigned field added", "plain.eml", insertBeforeField("Date:", "X-Spam-Score: 0\r\n"), true},
		{"whitespace refolded", "plain.eml", replace("Subject: nightly backup", "Subject:   nightly\r\n\tbackup"), true},
	}
	for _, ks := range keySetups(t, newTestKeys(t)) {
		keys := mustLoad(t, ks.cfg)
		for _, tt := range tests {
			t.Run(ks.name+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				signed := sign(t, keys, fixtures[tt.fixture], 4096)
				edited := tt.edit(signed)
				if bytes.Equal(edited, signed) {
					t.Fatal("the edit changed nothing")
				}
				for i, err := range verifyGo(t, edited, ks.records) {
					if (err == nil) != tt.valid {
						t.Errorf("go-msgauth: signature %d: err = %v, want valid %v\n%s", i, err, tt.valid, edited)
					}
				}
				if !python {
					return
				}
				for i, r := range verifyPython(t, edited, ks.records, len(ks.algos)) {
					if (r == "ok") != tt.valid {
						t.Errorf("python3-dkim: signature %d: %s, want valid %v", i, r, tt.valid)
					}
				}
			})
		}
	}
}

func replace(old, new string) func([]byte) []byte {
	return func(b []byte) []byte { return bytes.Replace(b, []byte(old), []byte(new), 1) }
}

func appendBytes(s string) func([]byte) []byte {
	return func(b []byte) []byte { return append(slices.Clip(b), s...) }
}

// insertBeforeField inserts field above the first line starting with name
// below the signatures.
func insertBeforeField(name, field string) func([]byte) []byte {
	return func(b []byte) []byte {
		i := bytes.Index(b, []byte("\r\n"+name))
		if i < 0 {
			return b
		}
		i += 2
		return slices.Concat(b[:i], []byte(field), b[i:])
	}
}

func prependField(field string) func([]byte) []byte {
	return func(b []byte) []byte { return slices.Concat([]byte(field), b) }
}

// TestHeaderWithoutBody: a message that is all header (no blank line) is
// valid RFC 5322; go-msgauth would fail on it without the closing CRLF
// Finish supplies.
func TestHeaderWithoutBody(t *testing.T) {
	t.Parallel()
	ks := keySetups(t, newTestKeys(t))[2]
	keys := mustLoad(t, ks.cfg)
	for _, msg := range []string{
		"From: cron@example.com\r\nSubject: x\r\n",
		"From: cron@example.com\r\nSubject: x",
		"From: cron@example.com\r\nSubject: x\r",
	} {
		signed := sign(t, keys, []byte(msg), 3)
		// What a receiver gets: SMTP ends the data with CRLF.
		received := append(signed[:len(signed)-len(msg)], "From: cron@example.com\r\nSubject: x\r\n\r\n"...)
		for i, err := range verifyGo(t, received, ks.records) {
			if err != nil {
				t.Errorf("%q: signature %d: %v", msg, i, err)
			}
		}
	}
}

func TestNewSigningWithoutKey(t *testing.T) {
	t.Parallel()
	var none *dkimKeys
	if s, err := none.newSigning("example.com", []string{"From"}, time.Now()); s != nil || err != nil {
		t.Errorf("nil keys: %v, %v", s, err)
	}
	keys := mustLoad(t, keySetups(t, newTestKeys(t))[0].cfg)
	for _, d := range []string{"example.org", "notexample.com", "sub.example.com", ""} {
		if s, err := keys.newSigning(d, []string{"From"}, time.Now()); s != nil || err != nil {
			t.Errorf("%q: %v, %v", d, s, err)
		}
	}
}

func TestAbort(t *testing.T) {
	t.Parallel()
	keys := mustLoad(t, keySetups(t, newTestKeys(t))[2].cfg)
	s, err := keys.newSigning("example.com", []string{"From"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s.Write([]byte("From: a@example.com\r\n\r\npartial"))
	s.Abort()
	s.Abort()
	if _, err := s.Write([]byte("more")); err == nil {
		t.Error("Write after Abort succeeded")
	}
	if _, err := s.Finish(); err == nil {
		t.Error("Finish after Abort succeeded")
	}
	var nilSigning *signing
	nilSigning.Abort()
}

func TestForDomain(t *testing.T) {
	t.Parallel()
	k := newTestKeys(t)
	rsaFile := writeKey(t, k.rsa)
	edFile := writeKey(t, k.ed)
	keys := mustLoad(t, DKIMConfig{Keys: []DKIMKey{
		{Domain: "example.com", Selector: "a", KeyFile: rsaFile, Subdomains: true},
		{Domain: "example.org", Selector: "b", KeyFile: rsaFile},
		{Domain: "eu.example.com", Selector: "c", KeyFile: edFile},
	}})
	tests := []struct {
		from string
		want []string // selectors
	}{
		{"example.com", []string{"a"}},
		{"EXAMPLE.com.", []string{"a"}},
		{"eu.example.com", []string{"a", "c"}},
		{"deep.eu.example.com", []string{"a"}},
		{"example.org", []string{"b"}},
		{"sub.example.org", nil},
		{"badexample.com", nil},
		{"com", nil},
		{"example.net", nil},
	}
	for _, tt := range tests {
		var got []string
		for _, key := range keys.forDomain(tt.from) {
			got = append(got, key.Selector)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("forDomain(%q) = %v, want %v", tt.from, got, tt.want)
		}
	}
	if got, want := keys.domains(), []string{"eu.example.com", "example.com", "example.org"}; !slices.Equal(got, want) {
		t.Errorf("domains() = %v, want %v", got, want)
	}
}

func TestLoadDKIMKeysWarnsOnEd25519Only(t *testing.T) {
	t.Parallel()
	k := newTestKeys(t)
	rsaFile, edFile := writeKey(t, k.rsa), writeKey(t, k.ed)
	_, warns, err := loadDKIMKeys(DKIMConfig{Keys: []DKIMKey{
		{Domain: "example.com", Selector: "e", KeyFile: edFile},
		{Domain: "example.org", Selector: "e", KeyFile: edFile},
		{Domain: "example.org", Selector: "r", KeyFile: rsaFile},
		{Domain: "example.net", Selector: "r", KeyFile: rsaFile},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"Gmail and Outlook do not yet verify Ed25519 alone; add an RSA key for example.com (dual signing, RFC 8463)"}
	if !slices.Equal(warns, want) {
		t.Errorf("warnings = %q, want %q", warns, want)
	}
}

func TestLoadDKIMKeysErrors(t *testing.T) {
	t.Parallel()
	k := newTestKeys(t)
	dir := t.TempDir()
	rsaFile := writeKey(t, k.rsa)
	open := filepath.Join(dir, "open.key")
	pemKey, _ := certs.MarshalDKIMKey(k.rsa)
	os.WriteFile(open, pemKey, 0o600)
	os.Chmod(open, 0o644)
	missing := filepath.Join(dir, "missing.key")
	tests := []struct {
		name     string
		keys     []DKIMKey
		sentinel error
		want     []string
	}{
		{"missing", []DKIMKey{{Domain: "example.com", Selector: "s", KeyFile: rsaFile}, {Domain: "example.org", Selector: "s", KeyFile: missing}},
			fs.ErrNotExist, []string{"dkim.keys[1]", missing, "example.org"}},
		{"permissions", []DKIMKey{{Domain: "example.com", Selector: "s", KeyFile: open}},
			certs.ErrKeyPermissions, []string{"dkim.keys[0]", open, "0644"}},
		{"duplicate selector", []DKIMKey{{Domain: "example.com", Selector: "s", KeyFile: rsaFile}, {Domain: "Example.com", Selector: "s", KeyFile: rsaFile}},
			nil, []string{"dkim.keys[1]", "dkim.keys[0]", "selector"}},
	}
	for _, tt := range tests {
		_, _, err := loadDKIMKeys(DKIMConfig{Keys: tt.keys})
		if err == nil {
			t.Errorf("%s: no error", tt.name)
			continue
		}
		if tt.sentinel != nil && !errors.Is(err, tt.sentinel) {
			t.Errorf("%s: %v does not wrap %v", tt.name, err, tt.sentinel)
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not mention %q", tt.name, err, w)
			}
		}
	}
}

// benchMessage is a 4 KiB message of the kind cron and monitoring send.
func benchMessage() []byte {
	var b bytes.Buffer
	b.WriteString("From: Cron Daemon <cron@example.com>\r\nTo: ops@example.net\r\nSubject: nightly report\r\n" +
		"Date: Tue, 03 Mar 2026 02:00:01 +0000\r\nMessage-ID: <20260303020001.1@app01.example.com>\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	for b.Len() < 4096-80 {
		b.WriteString("2026-03-03T02:00:01Z backup: /srv/data copied, 41 GiB, 0 errors, checksum ok\r\n")
	}
	return b.Bytes()[:min(b.Len(), 4096)]
}

func benchSign(b *testing.B, setup int) {
	keys := mustLoad(b, keySetups(b, newTestKeys(b))[setup].cfg)
	msg := benchMessage()
	fields := fieldNames(msg)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		n++
		s, err := keys.newSigning("example.com", fields, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		// The session writes in the chunks it reads: bufio's 4 KiB.
		if _, err := io.Copy(s, bytes.NewReader(msg)); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Finish(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
}

func BenchmarkSignRSA2048_4KiB(b *testing.B) { benchSign(b, 0) }
func BenchmarkSignEd25519_4KiB(b *testing.B) { benchSign(b, 1) }
func BenchmarkSignDual_4KiB(b *testing.B)    { benchSign(b, 2) }
