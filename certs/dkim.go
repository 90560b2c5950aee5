package certs

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// Errors LoadDKIMKey wraps, so callers (and `sealpost check`) can say what
// is wrong without parsing messages.
var (
	// ErrKeyPermissions: the key file can be read or written by group or
	// others. A DKIM key lets anyone who reads it sign mail as the domain.
	ErrKeyPermissions = errors.New("dkim key file permissions too open")
	// ErrKeyFormat: not PEM, not a private key, encrypted, or an algorithm
	// DKIM does not define (only RSA and Ed25519 are, RFC 6376 and 8463).
	ErrKeyFormat = errors.New("dkim key format")
	// ErrRSATooShort: RSA keys below 2048 bits are refused; RFC 8301 makes
	// 1024 the floor for verifiers and large receivers already treat it as weak.
	ErrRSATooShort = errors.New("dkim rsa key too short")
)

const (
	minRSABits = 2048
	// maxRSABits is the largest size RFC 8301 obliges verifiers to handle;
	// larger keys also outgrow what many DNS control panels accept.
	maxRSABits = 4096
	// maxKeyFileSize bounds the read: a PEM RSA-4096 key is about 3.3 KiB,
	// so anything much bigger is not a key and need not be slurped.
	maxKeyFileSize = 64 << 10
)

// LoadDKIMKey reads a PEM private key for DKIM signing: PKCS#8 ("PRIVATE
// KEY", RSA or Ed25519) or PKCS#1 ("RSA PRIVATE KEY"). It refuses a file
// that group or others may read or write, RSA keys under 2048 bits, and
// anything else (certificates, ECDSA, encrypted keys). Every error names
// the file and wraps one of ErrKeyPermissions, ErrKeyFormat,
// ErrRSATooShort or fs.ErrNotExist.
func LoadDKIMKey(path string) (crypto.Signer, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: DKIM key file does not exist (create one with `sealpost dkim keygen`): %w", path, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("DKIM key: %w", err)
	}
	defer f.Close()
	// Stat the open file, not the path, so the mode checked is the mode of
	// the bytes read.
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("DKIM key: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file: %w", path, ErrKeyFormat)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s: key file is readable by group or others (mode %04o); chmod 600 it: %w", path, perm, ErrKeyPermissions)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("DKIM key %s: %w", path, err)
	}
	if len(data) > maxKeyFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes, not a DKIM key: %w", path, maxKeyFileSize, ErrKeyFormat)
	}
	key, err := parseDKIMKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

// parseDKIMKey returns the first private key among the PEM blocks; other
// blocks (EC PARAMETERS, a certificate bundled with the key) are skipped.
func parseDKIMKey(data []byte) (crypto.Signer, error) {
	var sawPEM, sawCert bool
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		sawPEM = true
		switch block.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("PKCS#8 private key does not parse (%v): %w", err, ErrKeyFormat)
			}
			return checkDKIMKey(k)
		case "RSA PRIVATE KEY":
			if _, encrypted := block.Headers["DEK-Info"]; encrypted {
				return nil, fmt.Errorf("the RSA key is encrypted; sealpost needs it unencrypted (protect it with mode 0600): %w", ErrKeyFormat)
			}
			k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("PKCS#1 RSA private key does not parse (%v): %w", err, ErrKeyFormat)
			}
			return checkDKIMKey(k)
		case "ENCRYPTED PRIVATE KEY":
			return nil, fmt.Errorf("the key is encrypted; sealpost needs it unencrypted (protect it with mode 0600): %w", ErrKeyFormat)
		case "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "DSA PRIVATE KEY":
			return nil, fmt.Errorf("%s is not usable for DKIM: use an RSA (2048 bits or more) or Ed25519 key in PKCS#8 PEM (`sealpost dkim keygen`): %w", block.Type, ErrKeyFormat)
		case "CERTIFICATE":
			sawCert = true
		}
	}
	switch {
	case sawCert:
		return nil, fmt.Errorf("holds a certificate, not a private key: %w", ErrKeyFormat)
	case sawPEM:
		return nil, fmt.Errorf("no private key among its PEM blocks: %w", ErrKeyFormat)
	default:
		return nil, fmt.Errorf("not a PEM file (expected a PEM \"PRIVATE KEY\" block, as sealpost dkim keygen writes): %w", ErrKeyFormat)
	}
}

func checkDKIMKey(k any) (crypto.Signer, error) {
	switch k := k.(type) {
	case *rsa.PrivateKey:
		if bits := k.N.BitLen(); bits < minRSABits {
			return nil, fmt.Errorf("RSA key has %d bits, DKIM needs at least %d: %w", bits, minRSABits, ErrRSATooShort)
		}
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	default:
		return nil, fmt.Errorf("%T is not usable for DKIM: use RSA (2048 bits or more) or Ed25519: %w", k, ErrKeyFormat)
	}
}

// GenerateDKIMKey makes a new signing key. algo is "rsa" (the default when
// empty) or "ed25519"; bits applies to RSA only, 0 meaning 2048, and must
// lie in [2048, 4096].
func GenerateDKIMKey(algo string, bits int) (crypto.Signer, error) {
	switch algo {
	case "", "rsa":
		if bits == 0 {
			bits = minRSABits
		}
		if bits < minRSABits || bits > maxRSABits {
			return nil, fmt.Errorf("RSA key size %d: use %d to %d bits", bits, minRSABits, maxRSABits)
		}
		return rsa.GenerateKey(rand.Reader, bits)
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	default:
		return nil, fmt.Errorf("DKIM key algorithm %q: use \"rsa\" or \"ed25519\"", algo)
	}
}

// MarshalDKIMKey encodes key as PKCS#8 PEM, the one form LoadDKIMKey,
// OpenSSL and OpenDKIM all read for both RSA and Ed25519.
func MarshalDKIMKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode DKIM key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// WriteDKIMKey writes key to a new file with mode 0600. It never replaces
// an existing file: overwriting a key whose record is published would break
// every message signed until DNS catches up. The error for an existing
// file wraps fs.ErrExist.
func WriteDKIMKey(path string, key crypto.Signer) (err error) {
	pemBytes, err := MarshalDKIMKey(key)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists; a key is never overwritten (remove it or choose another file): %w", path, fs.ErrExist)
	}
	if err != nil {
		return fmt.Errorf("write DKIM key: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(path)
		}
	}()
	if _, err = f.Write(pemBytes); err != nil {
		return fmt.Errorf("write DKIM key %s: %w", path, err)
	}
	// A key that is lost in a crash after its record went out is worse than
	// a slow keygen.
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write DKIM key %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write DKIM key %s: %w", path, err)
	}
	return nil
}

// DKIMRecord returns the TXT record that publishes pub: for RSA the
// SubjectPublicKeyInfo (RFC 6376 3.6.1), for Ed25519 the raw 32-byte key
// (RFC 8463 4.2).
func DKIMRecord(pub crypto.PublicKey) (string, error) {
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return "", fmt.Errorf("encode DKIM public key: %w", err)
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub), nil
	default:
		return "", fmt.Errorf("%T is not a DKIM public key (RSA or Ed25519)", pub)
	}
}

// DKIMRecordName is the DNS name a verifier queries for selector and domain.
func DKIMRecordName(selector, domain string) string {
	return selector + "._domainkey." + strings.TrimSuffix(domain, ".")
}

// maxTXTString is the longest character-string a TXT record can hold
// (RFC 1035 3.3); longer values must be split, and verifiers join them.
const maxTXTString = 255

// SplitTXT cuts record into strings of at most 255 bytes, in order.
func SplitTXT(record string) []string {
	var parts []string
	for len(record) > maxTXTString {
		parts = append(parts, record[:maxTXTString])
		record = record[maxTXTString:]
	}
	return append(parts, record)
}

// ZoneLine renders record as a BIND zone-file line. The tags before p= go
// in a string of their own so the key reads as one block; the key is then
// split at 255 bytes.
func ZoneLine(selector, domain, record string) string {
	var parts []string
	if i := strings.Index(record, "; p="); i > 0 {
		parts = append(parts, record[:i+2])
		record = record[i+2:]
	}
	parts = append(parts, SplitTXT(record)...)
	var b strings.Builder
	b.WriteString(DKIMRecordName(selector, domain))
	b.WriteString(". IN TXT (")
	for _, p := range parts {
		b.WriteString(" ")
		b.WriteString(QuoteTXT(p))
	}
	b.WriteString(" )")
	return b.String()
}

// QuoteTXT quotes one TXT character-string for a zone file or a DNS
// control panel.
func QuoteTXT(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"`
}
