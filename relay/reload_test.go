package relay

import (
	"crypto"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"sealpost/certs"
	"sealpost/certs/certstest"
	"sealpost/upstream/upstreamtest"
)

// TestReloadSwapsDKIMKeysWithoutDroppingSessions: a key rotation applied by
// Reload signs the next message on a connection that was open before it,
// and both messages verify against their own selector's record.
func TestReloadSwapsDKIMKeysWithoutDroppingSessions(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	up := tlsUpstream(t, ca)
	oldKey, newKey := mustEd25519(t), mustEd25519(t)
	cfg := newTestConfig(t, ca, up.Addr())
	cfg.DKIM.Keys = []DKIMKey{{Domain: "example.com", Selector: "old", KeyFile: writeKey(t, oldKey)}}
	cfg.DKIM.Unsigned = "reject"
	env := startRelay(t, cfg, nil)

	c, err := smtp.Dial(env.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Each message is known by its queue id: the upstream may receive them
	// in either order (deliveries run in parallel).
	sendOn := func() (queueID string) {
		t.Helper()
		if err := c.Mail("app@example.com", nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt("ops@example.net", nil); err != nil {
			t.Fatal(err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, testBody)
		resp, err := w.CloseWithResponse()
		if err != nil {
			t.Fatal(err)
		}
		fields := strings.Fields(resp.StatusText)
		return fields[len(fields)-1] // "OK: queued as <id>"
	}
	first := sendOn()
	next := *cfg
	next.DKIM.Keys = []DKIMKey{{Domain: "example.com", Selector: "new", KeyFile: writeKey(t, newKey)}}
	if err := env.relay.Reload(&next); err != nil {
		t.Fatal(err)
	}
	second := sendOn() // same connection, after the reload
	received := up.Expect(t, 2)
	var msgs [2]upstreamtest.Received
	for _, m := range received {
		switch {
		case strings.Contains(string(m.Data), " id "+first+";"):
			msgs[0] = m
		case strings.Contains(string(m.Data), " id "+second+";"):
			msgs[1] = m
		default:
			t.Fatalf("a message of neither transaction (%s, %s):\n%s", first, second, m.Data)
		}
	}

	records := map[string]string{}
	for sel, k := range map[string]crypto.Signer{"old": oldKey, "new": newKey} {
		r, err := certs.DKIMRecord(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		records[sel+"._domainkey.example.com"] = r
	}
	for i, want := range []string{"s=old", "s=new"} {
		if !strings.Contains(string(msgs[i].Data), want) {
			t.Errorf("message %d not signed with %s:\n%s", i+1, want, msgs[i].Data)
		}
		for _, err := range verifyGo(t, msgs[i].Data, records) {
			if err != nil {
				t.Errorf("message %d: %v", i+1, err)
			}
		}
	}
}

func TestTooManyRecipients(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	cfg := newTestConfig(t, ca, "127.0.0.1:1")
	cfg.Listen.MaxRecipients = 2
	env := startRelay(t, cfg, nil)
	_, err := send(t, env.addr, "app@example.com", []string{"a@example.net", "b@example.net", "c@example.net"}, testBody)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 452 || se.EnhancedCode != (smtp.EnhancedCode{4, 5, 3}) {
		t.Errorf("third recipient: %v, want 452 4.5.3", err)
	}
}
