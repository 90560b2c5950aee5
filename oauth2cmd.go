package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"time"

	"golang.org/x/oauth2"

	"sealpost/relay"
	"sealpost/upstream"
)

// cmdOAuth2 is `sealpost oauth2 login`: the device-code flow (RFC 8628)
// that obtains the first refresh token for an upstream's [oauth2] table and
// writes it, mode 0600, where refresh_token_file points. The token is
// never printed.
func cmdOAuth2(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "login" {
		fmt.Fprint(stderr, "usage: sealpost oauth2 login [-config FILE] [-upstream NAME] [-out FILE]\n")
		return exitUsage
	}
	fs := newFlagSet("oauth2 login", stderr)
	configFlag := fs.String("config", "", "configuration file")
	name := fs.String("upstream", relay.DefaultUpstream, "which upstream: \"default\" for [upstream], else the NAME of [upstreams.NAME]")
	out := fs.String("out", "", "where to write the refresh token (default: the upstream's oauth2.refresh_token_file)")
	if err := fs.Parse(args[1:]); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sealpost oauth2 login: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg, err := relay.LoadConfig(configPath(*configFlag))
	if err != nil {
		fmt.Fprintf(stderr, "sealpost oauth2 login: %v\n", err)
		return exitFailure
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := oauth2Login(ctx, cfg, *name, *out, http.DefaultClient, stdout); err != nil {
		fmt.Fprintf(stderr, "sealpost oauth2 login: %v\n", err)
		return exitFailure
	}
	return exitOK
}

func oauth2Login(ctx context.Context, cfg *relay.Config, name, out string, client *http.Client, stdout io.Writer) error {
	u, ok := cfg.UpstreamByName(name)
	if !ok {
		return fmt.Errorf("no upstream %q in %s", name, cfg.Path)
	}
	o := u.OAuth2
	switch {
	case !o.Set():
		return fmt.Errorf("upstream %q has no [oauth2] table", name)
	case o.Flow == upstream.FlowClientCredentials:
		return errors.New("the client_credentials flow needs no login: the client secret is all it uses")
	case o.DeviceAuthURL == "":
		return fmt.Errorf("upstream %q has no oauth2.device_auth_url: its provider offers no device-code flow for this scope (Gmail's mail scope is not allowed in Google's device flow); obtain the refresh token another way and put it in refresh_token_file", name)
	}
	if out == "" {
		out = o.RefreshTokenFile
	}
	if out == "" {
		return errors.New("no file to write the refresh token to: set oauth2.refresh_token_file or pass -out")
	}
	var secret string
	if src := o.ClientSecret(); src != nil {
		s, err := src.Load(ctx)
		if err != nil {
			return fmt.Errorf("oauth2 client secret: %w", err)
		}
		secret = s.Reveal()
	}
	oc := &oauth2.Config{
		ClientID: o.ClientID, ClientSecret: secret, Scopes: o.Scopes,
		Endpoint: oauth2.Endpoint{DeviceAuthURL: o.DeviceAuthURL, TokenURL: o.TokenURL},
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, client)
	da, err := oc.DeviceAuth(ctx)
	if err != nil {
		return fmt.Errorf("device authorization request: %w", err)
	}
	fmt.Fprintf(stdout, "To let sealpost send as %s, open\n\n    %s\n\nand enter the code %s (it expires at %s).\nWaiting for you to sign in…\n",
		u.Username, da.VerificationURI, da.UserCode, da.Expiry.Format(time.Kitchen))
	tok, err := oc.DeviceAccessToken(ctx, da)
	if err != nil {
		return fmt.Errorf("waiting for the sign-in: %w", err)
	}
	if tok.RefreshToken == "" {
		return errors.New("the provider issued no refresh token (for Microsoft 365 the scopes must include offline_access)")
	}
	if err := upstream.WriteSecretFile(out, tok.RefreshToken); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Refresh token written to %s (mode 0600). A running sealpost reads it at the next delivery attempt (`sealpost queue flush` retries now).\n", out)
	return nil
}
