package certs_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sealpost/certs"
	"sealpost/certs/certstest"
)

func TestDKIMKeyRoundTrip(t *testing.T) {
	t.Parallel()
	for _, algo := range []string{"rsa", "ed25519"} {
		t.Run(algo, func(t *testing.T) {
			t.Parallel()
			key, err := certs.GenerateDKIMKey(algo, 0)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "k.key")
			if err := certs.WriteDKIMKey(path, key); err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("mode %04o, want 0600", st.Mode().Perm())
			}
			got, err := certs.LoadDKIMKey(path)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
				t.Error("loaded key differs from the written one")
			}
			if r, ok := got.(*rsa.PrivateKey); ok && r.N.BitLen() != 2048 {
				t.Errorf("default RSA size %d, want 2048", r.N.BitLen())
			}
		})
	}
}

func TestLoadDKIMKeyPKCS1(t *testing.T) {
	t.Parallel()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	path := writeFile(t, "pkcs1.key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
	got, err := certs.LoadDKIMKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !got.(*rsa.PrivateKey).Equal(key) {
		t.Error("loaded key differs")
	}
}

func writeFile(t *testing.T, name string, data []byte, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // umask may have narrowed it
		t.Fatal(err)
	}
	return path
}

func TestLoadDKIMKeyErrors(t *testing.T) {
	t.Parallel()
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalECPrivateKey(ecKey)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	ca := certstest.NewCA(t)

	tests := []struct {
		name     string
		data     []byte
		mode     os.FileMode
		sentinel error
		want     string
	}{
		{"not PEM", []byte("just some text\n"), 0o600, certs.ErrKeyFormat, "not a PEM file"},
		{"certificate", ca.CertPEM(), 0o600, certs.ErrKeyFormat, "certificate, not a private key"},
		{"public key only", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}}), 0o600, certs.ErrKeyFormat, "no private key"},
		{"garbage in PEM", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("nope")}), 0o600, certs.ErrKeyFormat, "does not parse"},
		{"ECDSA PKCS#8", pkcs8(ecKey), 0o600, certs.ErrKeyFormat, "not usable for DKIM"},
		{"EC PRIVATE KEY", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}), 0o600, certs.ErrKeyFormat, "not usable for DKIM"},
		{"encrypted", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), 0o600, certs.ErrKeyFormat, "encrypted"},
		{"RSA-1024 PKCS#8", pkcs8(rsa1024), 0o600, certs.ErrRSATooShort, "1024 bits"},
		{"RSA-1024 PKCS#1", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsa1024)}), 0o600, certs.ErrRSATooShort, "at least 2048"},
		{"mode 0644", pkcs8(edKey), 0o644, certs.ErrKeyPermissions, "readable by group or others (mode 0644); chmod 600 it"},
		{"mode 0640", pkcs8(edKey), 0o640, certs.ErrKeyPermissions, "mode 0640"},
		{"mode 0602", pkcs8(edKey), 0o602, certs.ErrKeyPermissions, "mode 0602"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, "dkim.key", tt.data, tt.mode)
			key, err := certs.LoadDKIMKey(path)
			if err == nil {
				t.Fatalf("loaded %T", key)
			}
			if !errors.Is(err, tt.sentinel) {
				t.Errorf("%v does not wrap %v", err, tt.sentinel)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q should name %s and say %q", err, path, tt.want)
			}
		})
	}

	t.Run("missing", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "absent.key")
		_, err := certs.LoadDKIMKey(path)
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
			t.Errorf("err = %v, want fs.ErrNotExist naming %s", err, path)
		}
	})
	t.Run("directory", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		os.Chmod(dir, 0o700)
		if _, err := certs.LoadDKIMKey(dir); !errors.Is(err, certs.ErrKeyFormat) {
			t.Errorf("err = %v, want ErrKeyFormat", err)
		}
	})
}

func TestWriteDKIMKeyNeverOverwrites(t *testing.T) {
	t.Parallel()
	first, _ := certs.GenerateDKIMKey("ed25519", 0)
	second, _ := certs.GenerateDKIMKey("ed25519", 0)
	path := filepath.Join(t.TempDir(), "k.key")
	if err := certs.WriteDKIMKey(path, first); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	err := certs.WriteDKIMKey(path, second)
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("err = %v, want fs.ErrExist naming the file", err)
	}
	after, _ := os.ReadFile(path)
	if string(before) != string(after) {
		t.Error("the existing key was changed")
	}
}

func TestGenerateDKIMKeyBounds(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		algo string
		bits int
		ok   bool
	}{
		{"rsa", 1024, false}, {"rsa", 2047, false}, {"rsa", 8192, false}, {"dsa", 0, false}, {"ecdsa", 0, false},
		{"ed25519", 0, true}, {"", 0, true}, {"rsa", 3072, true},
	} {
		key, err := certs.GenerateDKIMKey(tt.algo, tt.bits)
		if (err == nil) != tt.ok {
			t.Errorf("GenerateDKIMKey(%q, %d) = %T, %v; want ok %v", tt.algo, tt.bits, key, err, tt.ok)
		}
	}
}

func TestDKIMRecord(t *testing.T) {
	t.Parallel()
	rsaKey, _ := certs.GenerateDKIMKey("rsa", 2048)
	edKey, _ := certs.GenerateDKIMKey("ed25519", 0)

	rec, err := certs.DKIMRecord(rsaKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	p, ok := strings.CutPrefix(rec, "v=DKIM1; k=rsa; p=")
	if !ok {
		t.Fatalf("RSA record %q", rec)
	}
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil || !pub.(*rsa.PublicKey).Equal(rsaKey.Public()) {
		t.Errorf("p= is not the key's SubjectPublicKeyInfo: %v", err)
	}

	rec, err = certs.DKIMRecord(edKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	p, ok = strings.CutPrefix(rec, "v=DKIM1; k=ed25519; p=")
	raw, _ := base64.StdEncoding.DecodeString(p)
	if !ok || len(raw) != 32 || !ed25519.PublicKey(raw).Equal(edKey.Public()) {
		t.Errorf("Ed25519 record %q is not the raw 32-byte key (RFC 8463)", rec)
	}

	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := certs.DKIMRecord(ec.Public()); err == nil {
		t.Error("an ECDSA key got a DKIM record")
	}
}

func TestSplitTXTAndZoneLine(t *testing.T) {
	t.Parallel()
	for _, bits := range []int{2048, 4096} {
		key, _ := certs.GenerateDKIMKey("rsa", bits)
		rec, _ := certs.DKIMRecord(key.Public())
		parts := certs.SplitTXT(rec)
		if strings.Join(parts, "") != rec {
			t.Errorf("%d: parts do not join to the record", bits)
		}
		for _, p := range parts {
			if len(p) > 255 || len(p) == 0 {
				t.Errorf("%d: part of %d bytes", bits, len(p))
			}
		}
		if bits == 2048 && (len(parts) != 2 || len(parts[0]) != 255) {
			t.Errorf("RSA-2048 record (%d bytes) split into %d parts", len(rec), len(parts))
		}

		line := certs.ZoneLine("s2026", "example.com.", rec)
		if !strings.HasPrefix(line, `s2026._domainkey.example.com. IN TXT ( "v=DKIM1; k=rsa; " "p=MII`) || !strings.HasSuffix(line, `" )`) {
			t.Errorf("zone line %q", line)
		}
		body := strings.TrimSuffix(strings.TrimPrefix(line, `s2026._domainkey.example.com. IN TXT ( "`), `" )`)
		strs := strings.Split(body, `" "`)
		for _, s := range strs {
			if len(s) > 255 {
				t.Errorf("zone line string of %d bytes", len(s))
			}
		}
		if strings.Join(strs, "") != rec {
			t.Errorf("zone line strings do not join to the record")
		}
	}
	if got := certs.SplitTXT("short"); len(got) != 1 || got[0] != "short" {
		t.Errorf("SplitTXT(short) = %q", got)
	}
	if got := certs.DKIMRecordName("s1", "Example.com."); got != "s1._domainkey.Example.com" {
		t.Errorf("DKIMRecordName = %q", got)
	}
}
