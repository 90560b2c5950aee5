package relay

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func parseTestConfig(t *testing.T, src string) *Config {
	t.Helper()
	cfg, err := ParseConfig("test.toml", []byte("hostname = \"relay.test\"\n"+src+"\n[policy]\nallow_any_from = true\n"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestProviderPresets: each preset gives the settings its provider's
// documentation states (see the comments in presets.go for the pages).
func TestProviderPresets(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	secret := filepath.Join(dir, "s")
	if err := os.WriteFile(secret, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, toml            string
		addr, tls, auth, user string
		tokenURL, deviceURL   string
		scopes                []string
	}{
		{name: "gmail app password", toml: `provider = "gmail"
username = "me@gmail.com"
password_file = "` + secret + `"`, addr: "smtp.gmail.com:587", tls: "starttls", user: "me@gmail.com"},
		{name: "gmail oauth2", toml: `provider = "gmail"
username = "me@gmail.com"
[upstream.oauth2]
client_id = "c"
client_secret_file = "` + secret + `"
refresh_token_file = "` + secret + `"`, addr: "smtp.gmail.com:587", tls: "starttls", auth: "xoauth2", user: "me@gmail.com",
			tokenURL: "https://oauth2.googleapis.com/token", scopes: []string{"https://mail.google.com/"}},
		{name: "microsoft365 delegated", toml: `provider = "microsoft365"
username = "relay@contoso.com"
[upstream.oauth2]
client_id = "c"
tenant = "contoso.onmicrosoft.com"
refresh_token_file = "` + secret + `"`, addr: "smtp.office365.com:587", tls: "starttls", auth: "xoauth2", user: "relay@contoso.com",
			tokenURL:  "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
			deviceURL: "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/devicecode",
			scopes:    []string{"https://outlook.office.com/SMTP.Send", "offline_access"}},
		{name: "microsoft365 app-only", toml: `provider = "microsoft365"
username = "relay@contoso.com"
[upstream.oauth2]
flow = "client_credentials"
client_id = "c"
tenant = "11111111-2222-3333-4444-555555555555"
client_secret_file = "` + secret + `"`, addr: "smtp.office365.com:587", tls: "starttls", auth: "xoauth2", user: "relay@contoso.com",
			tokenURL:  "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555/oauth2/v2.0/token",
			deviceURL: "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555/oauth2/v2.0/devicecode",
			scopes:    []string{"https://outlook.office365.com/.default"}},
		{name: "ses", toml: `provider = "ses"
region = "eu-west-1"`, addr: "email-smtp.eu-west-1.amazonaws.com:587", tls: "starttls"},
		{name: "mailgun", toml: `provider = "mailgun"`, addr: "smtp.mailgun.org:587", tls: "starttls"},
		{name: "postmark", toml: `provider = "postmark"`, addr: "smtp.postmarkapp.com:587", tls: "starttls"},
		{name: "sendgrid", toml: `provider = "sendgrid"
password_file = "` + secret + `"`, addr: "smtp.sendgrid.net:587", tls: "starttls", user: "apikey"},
		{name: "fastmail", toml: `provider = "fastmail"
username = "me@fastmail.com"
password_env = "FM"`, user: "me@fastmail.com", addr: "smtp.fastmail.com:465", tls: "implicit", auth: "plain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := parseTestConfig(t, "[upstream]\n"+tt.toml).Upstream
			if u.Addr != tt.addr || u.TLS != tt.tls || u.Auth != tt.auth || u.Username != tt.user {
				t.Errorf("addr, tls, auth, username = %q, %q, %q, %q; want %q, %q, %q, %q", u.Addr, u.TLS, u.Auth, u.Username, tt.addr, tt.tls, tt.auth, tt.user)
			}
			if u.OAuth2.TokenURL != tt.tokenURL || u.OAuth2.DeviceAuthURL != tt.deviceURL || !slices.Equal(u.OAuth2.Scopes, tt.scopes) {
				t.Errorf("oauth2 = %q %q %q; want %q %q %q", u.OAuth2.TokenURL, u.OAuth2.DeviceAuthURL, u.OAuth2.Scopes, tt.tokenURL, tt.deviceURL, tt.scopes)
			}
		})
	}
}

// TestProviderPresetOverride: keys written in the file win over the
// preset, in [upstream] and in a named upstream.
func TestProviderPresetOverride(t *testing.T) {
	t.Parallel()
	cfg := parseTestConfig(t, `[upstream]
provider = "sendgrid"
addr = "smtp.sendgrid.net:465"
tls = "implicit"
username = "apikey2"
password_env = "SG_KEY"
[upstreams.mail]
provider = "fastmail"
tls = "starttls"
addr = "smtp.fastmail.com:587"
auth = "login"
username = "me@fastmail.com"
password_env = "FM"
max_connections = 2`)
	u := cfg.Upstream
	if u.Addr != "smtp.sendgrid.net:465" || u.TLS != "implicit" || u.Username != "apikey2" {
		t.Errorf("[upstream] = %q %q %q: explicit keys lost to the preset", u.Addr, u.TLS, u.Username)
	}
	m := cfg.Upstreams["mail"]
	if m.Addr != "smtp.fastmail.com:587" || m.TLS != "starttls" || m.Auth != "login" || m.MaxConnections != 2 {
		t.Errorf("[upstreams.mail] = %q %q %q %d", m.Addr, m.TLS, m.Auth, m.MaxConnections)
	}
	// Keys a named upstream leaves out take [upstream]'s defaults.
	if m.DialTimeout != Defaults().Upstream.DialTimeout || m.MinTLSVersion != Defaults().Upstream.MinTLSVersion || m.MaxMessagesPerConnection != 100 {
		t.Errorf("named upstream defaults not applied: %+v", m)
	}
}
