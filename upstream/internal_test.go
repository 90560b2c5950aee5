package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/emersion/go-smtp"
)

func TestCheckTLSState(t *testing.T) {
	t.Parallel()
	verified := [][]*x509.Certificate{{{}}}
	tests := []struct {
		name  string
		st    tls.ConnectionState
		min   uint16
		check string // "" = ok
	}{
		{name: "ok 1.3", st: tls.ConnectionState{HandshakeComplete: true, VerifiedChains: verified, Version: tls.VersionTLS13}, min: tls.VersionTLS12},
		{name: "ok 1.2", st: tls.ConnectionState{HandshakeComplete: true, VerifiedChains: verified, Version: tls.VersionTLS12}, min: tls.VersionTLS12},
		{name: "no handshake", st: tls.ConnectionState{VerifiedChains: verified, Version: tls.VersionTLS13}, min: tls.VersionTLS12, check: CheckHandshake},
		{name: "not verified", st: tls.ConnectionState{HandshakeComplete: true, Version: tls.VersionTLS13}, min: tls.VersionTLS12, check: CheckNotVerified},
		{name: "1.1", st: tls.ConnectionState{HandshakeComplete: true, VerifiedChains: verified, Version: tls.VersionTLS11}, min: tls.VersionTLS12, check: CheckProtocolVersion},
		{name: "1.2 below min 1.3", st: tls.ConnectionState{HandshakeComplete: true, VerifiedChains: verified, Version: tls.VersionTLS12}, min: tls.VersionTLS13, check: CheckProtocolVersion},
		{name: "1.1 with min 0", st: tls.ConnectionState{HandshakeComplete: true, VerifiedChains: verified, Version: tls.VersionTLS11}, check: CheckProtocolVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := checkTLSState(tt.st, tt.min)
			if tt.check == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var te *TLSError
			if !errors.As(err, &te) || te.Check != tt.check {
				t.Errorf("err = %v, want TLSError %q", err, tt.check)
			}
		})
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestErrorTemporary(t *testing.T) {
	t.Parallel()
	reply := func(op string, code int) *Error { return &Error{Op: op, Code: code, Message: "x"} }
	tests := []struct {
		name string
		err  *Error
		temp bool
	}{
		{"rcpt 550", reply("rcpt", 550), false},
		{"rcpt 552", reply("rcpt", 552), false},
		{"rcpt 450", reply("rcpt", 450), true},
		{"rcpt 452", reply("rcpt", 452), true},
		{"mail 553", reply("mail", 553), false},
		{"mail 421", reply("mail", 421), true},
		{"data 554", reply("data", 554), false},
		{"data 451", reply("data", 451), true},
		{"auth 535", &Error{Op: "auth", Code: 535, Err: ErrAuthRejected}, true},
		{"auth 534", reply("auth", 534), true},
		{"auth 454", reply("auth", 454), true},
		{"auth mechanism missing", &Error{Op: "auth", Err: ErrMechanismNotOffered}, true},
		{"greeting 554", reply("greeting", 554), true},
		{"ehlo 550", reply("ehlo", 550), true},
		{"starttls 454", reply("starttls", 454), true},
		{"tls error", &Error{Op: "tls", Err: &TLSError{Check: CheckUntrusted}}, true},
		{"tls error with a 5xx code", &Error{Op: "data", Code: 554, Err: &TLSError{Check: CheckHandshake}}, true},
		{"dial refused", &Error{Op: "dial", Err: syscall.ECONNREFUSED}, true},
		{"timeout", &Error{Op: "data", Err: &net.OpError{Op: "read", Err: timeoutErr{}}}, true},
		{"canceled", &Error{Op: "mail", Err: context.Canceled}, true},
		{"eof", &Error{Op: "rcpt", Err: io.EOF}, true},
		{"unknown", &Error{Op: "data", Err: errors.New("?")}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.err.Temporary(); got != tt.temp {
				t.Errorf("Temporary() = %v, want %v", got, tt.temp)
			}
			if got := IsTemporary(fmt.Errorf("wrapped: %w", tt.err)); got != tt.temp {
				t.Errorf("IsTemporary(wrapped) = %v, want %v", got, tt.temp)
			}
		})
	}
	if IsTemporary(nil) {
		t.Error("IsTemporary(nil)")
	}
	if !IsTemporary(errors.New("foreign")) {
		t.Error("foreign errors must count as temporary")
	}
}

func TestNewError(t *testing.T) {
	t.Parallel()
	e := newError(context.Background(), "rcpt", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"})
	if e.Op != "rcpt" || e.Code != 550 || e.EnhancedCode != [3]int{5, 1, 1} || e.Error() != "upstream rcpt: 550 5.1.1 No such user" {
		t.Errorf("%+v: %q", e, e.Error())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if e := newError(ctx, "mail", os.ErrClosed); !errors.Is(e, context.Canceled) {
		t.Errorf("after cancel: %v", e)
	}
	if e := newError(context.Background(), "dial", syscall.ECONNREFUSED); !errors.Is(e, syscall.ECONNREFUSED) || e.Code != 0 {
		t.Errorf("network: %+v", e)
	}
}

func TestReplyError(t *testing.T) {
	t.Parallel()
	e := newError(context.Background(), "greeting", replyError(&textproto.Error{Code: 554, Msg: "5.7.1 go away"}))
	if e.Code != 554 || e.EnhancedCode != [3]int{5, 7, 1} || e.Message != "go away" {
		t.Errorf("%+v", e)
	}
	e = newError(context.Background(), "greeting", replyError(&textproto.Error{Code: 421, Msg: "busy, try later"}))
	if e.Code != 421 || e.EnhancedCode != [3]int{} || e.Message != "busy, try later" || e.Error() != "upstream greeting: 421 busy, try later" {
		t.Errorf("%+v %q", e, e.Error())
	}
}

func TestScrub(t *testing.T) {
	t.Parallel()
	_, sensitive := saslClient(MechanismPlain, "u@example.com", NewSecret("hunter2-long"))
	echo := "501 5.5.2 cannot decode " + sensitive[1] + " (hunter2-long)"
	got := scrub(echo, sensitive)
	if strings.Contains(got, "hunter2") || strings.Contains(got, sensitive[1]) {
		t.Errorf("scrub left the secret: %q", got)
	}
	if !strings.Contains(got, redacted) {
		t.Errorf("scrub: %q", got)
	}
}

func TestXOAUTH2Client(t *testing.T) {
	t.Parallel()
	c := &xoauth2Client{user: "u@example.com", token: "tok"}
	mech, ir, err := c.Start()
	if mech != "XOAUTH2" || string(ir) != "user=u@example.com\x01auth=Bearer tok\x01\x01" || err != nil {
		t.Errorf("Start = %q %q %v", mech, ir, err)
	}
	resp, err := c.Next([]byte(`{"status":"401"}`))
	if err != nil || resp == nil || len(resp) != 0 {
		t.Errorf("Next = %q (nil: %v), %v; want an empty, non-nil response", resp, resp == nil, err)
	}
	if _, err := c.Next([]byte("again")); err == nil {
		t.Error("second challenge accepted")
	}
}
