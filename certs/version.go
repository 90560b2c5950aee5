package certs

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
)

// ErrTLSVersion is wrapped by every error about a TLS version that is
// unknown or too old to be allowed.
var ErrTLSVersion = errors.New("unsupported TLS version")

// ParseTLSVersion turns a configuration value ("1.2" or "1.3") into a
// crypto/tls version constant.
//
// "1.0" and "1.1" are recognised only to be refused with a clear reason:
// both are deprecated (RFC 8996) and an upstream that needs them cannot be
// trusted to keep a password secret.
func ParseTLSVersion(s string) (uint16, error) {
	switch strings.TrimSpace(s) {
	case "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	case "1.0", "1.1":
		return 0, fmt.Errorf("TLS %s is refused: TLS below 1.2 is deprecated (RFC 8996); use \"1.2\" or \"1.3\": %w", s, ErrTLSVersion)
	default:
		return 0, fmt.Errorf("unknown TLS version %q: use \"1.2\" or \"1.3\" (TLS below 1.2 is refused): %w", s, ErrTLSVersion)
	}
}

// checkMinVersion maps the zero value to TLS 1.2 so that an unset field
// means "the safe default" rather than "whatever crypto/tls allows".
func checkMinVersion(v uint16) (uint16, error) {
	if v == 0 {
		return tls.VersionTLS12, nil
	}
	if v < tls.VersionTLS12 {
		return 0, fmt.Errorf("minimum TLS version %s is refused: TLS below 1.2 is deprecated (RFC 8996): %w", tls.VersionName(v), ErrTLSVersion)
	}
	if v > tls.VersionTLS13 {
		return 0, fmt.Errorf("minimum TLS version %#04x is not known: %w", v, ErrTLSVersion)
	}
	return v, nil
}
