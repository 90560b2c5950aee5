package relay

import (
	"fmt"
	"slices"
	"strings"
)

// providerPreset holds only what the provider's public documentation
// states; every value carries the page it comes from. Keys a provider does
// not document (an auth mechanism among several, say) are left to the
// defaults, where sealpost picks from what the server offers.
type providerPreset struct {
	addr string // may hold {region}
	tls  string
	// auth is set when the provider names one mechanism for password
	// logins; oauthAuth when it names the OAuth2 mechanism and [oauth2] is used.
	auth, oauthAuth string
	username        string
	needRegion      bool

	// OAuth2 endpoints; {tenant} is replaced by oauth2.tenant.
	tokenURL, deviceAuthURL string
	scopes                  []string // refresh_token flow
	appScopes               []string // client_credentials flow
}

var providerPresets = map[string]providerPreset{
	// https://developers.google.com/workspace/gmail/imap/imap-smtp:
	// smtp.gmail.com, port 587 for STARTTLS ("TLS") or 465; SASL XOAUTH2.
	// Scope https://mail.google.com/ (https://developers.google.com/workspace/gmail/api/auth/scopes,
	// "includes any usage of IMAP, SMTP, and POP3"); token endpoint from
	// https://developers.google.com/identity/protocols/oauth2/web-server.
	// No device_auth_url: Google's device flow accepts only a limited set
	// of scopes (https://developers.google.com/identity/protocols/oauth2/limited-input-device#allowedscopes)
	// and the Gmail scope is not among them.
	"gmail": {
		addr: "smtp.gmail.com:587", tls: "starttls", oauthAuth: "xoauth2",
		tokenURL: "https://oauth2.googleapis.com/token",
		scopes:   []string{"https://mail.google.com/"},
	},
	// https://learn.microsoft.com/en-us/exchange/mail-flow-best-practices/how-to-set-up-a-multifunction-device-or-application-to-send-email-using-microsoft-365-or-office-365:
	// SMTP AUTH client submission to smtp.office365.com port 587, STARTTLS.
	// https://learn.microsoft.com/en-us/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth:
	// SASL XOAUTH2; delegated scope https://outlook.office.com/SMTP.Send
	// (offline_access for a refresh token); client credentials with scope
	// https://outlook.office365.com/.default.
	// https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-device-code:
	// the /devicecode and /token endpoints under /{tenant}/oauth2/v2.0/.
	"microsoft365": {
		addr: "smtp.office365.com:587", tls: "starttls", oauthAuth: "xoauth2",
		tokenURL:      "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
		deviceAuthURL: "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/devicecode",
		scopes:        []string{"https://outlook.office.com/SMTP.Send", "offline_access"},
		appScopes:     []string{"https://outlook.office365.com/.default"},
	},
	// https://docs.aws.amazon.com/ses/latest/dg/smtp-connect.html: the
	// endpoint is per region (email-smtp.REGION.amazonaws.com); STARTTLS
	// on 25, 587 or 2587, TLS wrapper on 465 or 2465.
	"ses": {addr: "email-smtp.{region}.amazonaws.com:587", tls: "starttls", needRegion: true},
	// https://documentation.mailgun.com/docs/mailgun/user-manual/smtp-protocol/:
	// smtp.mailgun.org; ports 25, 587 and 2525 upgrade with STARTTLS, 465
	// is TLS. (EU-region domains: set addr to the EU host Mailgun names.)
	"mailgun": {addr: "smtp.mailgun.org:587", tls: "starttls"},
	// https://postmarkapp.com/support/article/811-what-are-the-smtp-details-api-tokens-i-should-be-using:
	// smtp.postmarkapp.com, ports 25, 2525 or 587, TLS via STARTTLS.
	"postmark": {addr: "smtp.postmarkapp.com:587", tls: "starttls"},
	// https://www.twilio.com/docs/sendgrid/for-developers/sending-email/integrating-with-the-smtp-api:
	// smtp.sendgrid.net port 587 (TLS) or 465 (SSL); the username is the
	// literal string "apikey", the password the API key.
	"sendgrid": {addr: "smtp.sendgrid.net:587", tls: "starttls", username: "apikey"},
	// https://www.fastmail.com/help/technical/servernamesandports.html:
	// smtp.fastmail.com port 465, SSL/TLS "but not STARTTLS",
	// authentication PLAIN, with an app password.
	"fastmail": {addr: "smtp.fastmail.com:465", tls: "implicit", auth: "plain"},
}

// ProviderNames lists the presets, for errors and documentation.
func ProviderNames() []string {
	names := make([]string, 0, len(providerPresets))
	for n := range providerPresets {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// applyPreset fills the keys of u that the file leaves out from its
// provider's preset. defined reports whether a key (relative to the
// upstream's table) was written in the file: explicit keys always win.
func applyPreset(u *UpstreamConfig, prefix string, defined func(key ...string) bool) error {
	if u.Provider == "" {
		if u.Region != "" {
			return fieldErr(prefix+".region", "set without a provider")
		}
		return nil
	}
	p, ok := providerPresets[u.Provider]
	if !ok {
		return fieldErr(prefix+".provider", "%q is not a known provider: use one of %s (or leave it out and set addr, tls and auth)", u.Provider, strings.Join(ProviderNames(), ", "))
	}
	if !defined("addr") {
		addr := p.addr
		if p.needRegion {
			if u.Region == "" {
				return fieldErr(prefix+".region", "required with provider = %q (e.g. \"eu-west-1\"), unless addr is set", u.Provider)
			}
			if !validSelector(u.Region) {
				return fieldErr(prefix+".region", "%q is not a region name", u.Region)
			}
			addr = strings.ReplaceAll(addr, "{region}", strings.ToLower(u.Region))
		}
		u.Addr = addr
	}
	if !defined("tls") {
		u.TLS = p.tls
	}
	if !defined("username") && p.username != "" {
		u.Username = p.username
	}
	o := &u.OAuth2
	if !defined("auth") {
		switch {
		case o.Set() && p.oauthAuth != "":
			u.Auth = p.oauthAuth
		case !o.Set() && p.auth != "" && u.Username != "":
			u.Auth = p.auth
		}
	}
	if !o.Set() || p.tokenURL == "" {
		return nil
	}
	tenant := o.Tenant
	if tenant == "" {
		tenant = "organizations"
	}
	if strings.Contains(p.tokenURL, "{tenant}") && (strings.ContainsAny(tenant, "/?#") || tenant == "") {
		return fieldErr(prefix+".oauth2.tenant", "%q is not a tenant ID or domain", tenant)
	}
	if o.Flow == "client_credentials" && o.Tenant == "" && strings.Contains(p.tokenURL, "{tenant}") && !defined("oauth2", "token_url") {
		return fieldErr(prefix+".oauth2.tenant", "required for the client_credentials flow: your tenant ID or primary domain")
	}
	expand := func(s string) string { return strings.ReplaceAll(s, "{tenant}", tenant) }
	if !defined("oauth2", "token_url") {
		o.TokenURL = expand(p.tokenURL)
	}
	if !defined("oauth2", "device_auth_url") && p.deviceAuthURL != "" {
		o.DeviceAuthURL = expand(p.deviceAuthURL)
	}
	if !defined("oauth2", "scopes") {
		if o.Flow == "client_credentials" {
			o.Scopes = slices.Clone(p.appScopes)
		} else {
			o.Scopes = slices.Clone(p.scopes)
		}
		if len(o.Scopes) == 0 {
			return fieldErr(prefix+".oauth2.scopes", "provider %q documents no scope for the %s flow: set scopes", u.Provider, o.Flow)
		}
	}
	return nil
}

// presetSummary is one line per preset for `sealpost check` and errors.
func presetSummary(name string) string {
	p := providerPresets[name]
	return fmt.Sprintf("%s: %s (%s)", name, p.addr, p.tls)
}
