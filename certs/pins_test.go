package certs

import (
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
)

func TestParsePin(t *testing.T) {
	t.Parallel()
	good := "sha256/" + strings.Repeat("A", 43) + "="
	if _, err := ParsePin(good); err != nil {
		t.Errorf("ParsePin(%q): %v", good, err)
	}
	for _, bad := range []string{"", "AAAA", "sha1/" + strings.Repeat("A", 27) + "=", "sha256/not base64!", "sha256/" + strings.Repeat("A", 20) + "=="} {
		if _, err := ParsePin(bad); err == nil {
			t.Errorf("ParsePin(%q) accepted", bad)
		}
	}
}

// handshakeWithPins completes a real TLS handshake against a server with a
// leaf from ca and returns the client's error.
func handshakeWithPins(t *testing.T, ca *CA, pins []string) error {
	t.Helper()
	leaf, err := ca.Issue("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{leaf}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	cfg, err := ClientConfig(ClientOptions{ServerName: "127.0.0.1", ExtraRoots: ca.Pool(), MinVersion: tls.VersionTLS12, Pins: pins})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, cfg)
	defer c.Close()
	return c.Handshake()
}

func TestPinsNarrowTrust(t *testing.T) {
	t.Parallel()
	ca, err := NewCA("pin test CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA("other CA")
	if err != nil {
		t.Fatal(err)
	}
	caPin := Pin(ca.Certificate())
	if err := handshakeWithPins(t, ca, []string{caPin}); err != nil {
		t.Errorf("pinned CA key: %v", err)
	}
	if err := handshakeWithPins(t, ca, []string{Pin(other.Certificate()), caPin}); err != nil {
		t.Errorf("one of two pins matches: %v", err)
	}
	err = handshakeWithPins(t, ca, []string{Pin(other.Certificate())})
	if !errors.Is(err, ErrPinMismatch) {
		t.Errorf("no pin matches: %v, want ErrPinMismatch", err)
	}
	if err != nil && !strings.Contains(err.Error(), "sha256/") {
		t.Errorf("mismatch error does not show the server's key: %v", err)
	}
	if _, err := ClientConfig(ClientOptions{ServerName: "x", Pins: []string{"bogus"}}); err == nil {
		t.Error("ClientConfig accepted a malformed pin")
	}
}
