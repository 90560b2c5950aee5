package upstreamtest

import (
	"bytes"
	"strings"
)

// SetToken makes token the one access token accepted for user from now on
// (XOAUTH2 and OAUTHBEARER), so tests can expire or rotate tokens while the
// server runs. An empty token refuses every token for user.
func (s *Server) SetToken(user, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tokens == nil {
		s.tokens = map[string]string{}
	}
	s.tokens[user] = token
}

func (s *Server) token(user string, initial map[string]string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.tokens[user]; ok {
		return t, t != ""
	}
	t, ok := initial[user]
	return t, ok
}

// oauthBearerServer follows RFC 7628: a refused token gets a 334 with a
// JSON error, the client answers with 0x01, and then 535.
type oauthBearerServer struct {
	check  func(user, token string) bool
	failed bool
}

func (a *oauthBearerServer) Next(response []byte) ([]byte, bool, error) {
	if a.failed {
		return nil, true, errAuthFailed
	}
	// gs2 header "n,a=user," then \x01-separated key=value pairs.
	header, rest, _ := bytes.Cut(response, []byte{1})
	var user string
	for _, f := range strings.Split(string(header), ",") {
		if v, ok := strings.CutPrefix(f, "a="); ok {
			user = v
		}
	}
	var token string
	for _, f := range bytes.Split(rest, []byte{1}) {
		if v, ok := strings.CutPrefix(string(f), "auth=Bearer "); ok {
			token = v
		}
	}
	if user != "" && token != "" && a.check(user, token) {
		return nil, true, nil
	}
	a.failed = true
	return []byte(`{"status":"invalid_token","schemes":"bearer"}`), false, nil
}
