package relay

import (
	"slices"
	"strings"
	"testing"

	"sealpost/certs/certstest"
	"sealpost/upstream/upstreamtest"
)

// TestAuditSchema checks the records of a run against the schema README
// documents: each event carries its required fields under the contract's
// names, and no record uses a synonym of a schema field.
func TestAuditSchema(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	up := tlsUpstream(t, ca)
	proxy := upstreamtest.NewProxy(t)
	proxy.Set(up.Addr())
	cfg := newTestConfig(t, ca, proxy.Addr())
	env := startRelay(t, cfg, nil)

	if _, err := send(t, env.addr, "app@example.com", []string{"ops@example.net"}, testBody); err != nil {
		t.Fatal(err)
	}
	env.logs.waitRecord(t, "delivered", 1)
	spoofed := strings.Replace(testBody, "From: app@example.com", "From: ceo@bank.example.org", 1)
	send(t, env.addr, "app@example.com", []string{"ops@example.net"}, spoofed)
	env.logs.waitRecord(t, "rejected", 1)
	proxy.Set("")
	up.Close() // and the connection the relay may keep to it
	if _, err := send(t, env.addr, "app@example.com", []string{"ops@example.net"}, testBody); err != nil {
		t.Fatal(err)
	}
	env.logs.waitRecord(t, "deferred", 1)

	required := map[string][]string{
		"received":  {"event", "queue_id", "client_ip", "mail_from", "rcpt", "size", "message_id", "tls", "duration_ms"},
		"delivered": {"event", "queue_id", "mail_from", "rcpt", "message_id", "upstream", "upstream_reply", "tls", "duration_ms"},
		"rejected":  {"event", "client_ip", "mail_from", "rule"},
		"deferred":  {"event", "queue_id", "mail_from", "rcpt", "message_id", "upstream", "duration_ms"},
	}
	// Names an audit record must not use: each means a schema field.
	synonyms := []string{"from", "to", "sender", "recipient", "recipients", "queue", "id", "qid", "ip", "client", "user", "bytes", "msgid", "messageid", "duration", "elapsed", "tls_version", "smarthost", "reply_text"}
	for event, fields := range required {
		recs := env.logs.records(event)
		if len(recs) == 0 {
			t.Errorf("no %q record", event)
			continue
		}
		for _, rec := range recs {
			for _, f := range fields {
				if _, ok := rec[f]; !ok {
					t.Errorf("%s record lacks %q: %v", event, f, rec)
				}
			}
			for k := range rec {
				if slices.Contains(synonyms, k) {
					t.Errorf("%s record uses %q instead of the schema's name: %v", event, k, rec)
				}
			}
			if rec["log"] != "audit" {
				t.Errorf("%s record without log=audit: %v", event, rec)
			}
		}
	}
	for _, f := range auditFields {
		if strings.ContainsAny(f, " .-") {
			t.Errorf("schema field %q is not a plain snake_case name", f)
		}
	}
}
