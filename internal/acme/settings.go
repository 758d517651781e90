package acme

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Settings is the acme section of the config file. Every zero value means
// the documented default.
type Settings struct {
	// Profile is the profile every ACME order is issued under; required.
	// An order gets only identifiers this profile allows.
	Profile string `yaml:"profile"`
	// URL is the ACME door's public URL, e.g.
	// https://ca.example.org:8443/acme/: every URL the door hands out
	// (directory entries, accounts, orders, Location headers) starts with
	// it, and a JWS must be signed for a URL under it. It is never taken
	// from a request's Host header, which the client chooses. mica serve
	// sets https://<first server name>:<API port>/acme/ when it is unset;
	// New requires it.
	URL string `yaml:"url"`
	// ExternalAccountRequired makes newAccount demand an external account
	// binding (RFC 8555 §7.3.4) made with one of EABKeys.
	ExternalAccountRequired bool `yaml:"external_account_required"`
	// EABKeys maps EAB key IDs to their HMAC keys, base64url.
	EABKeys map[string]string `yaml:"eab_keys"`
	// HTTP01Port and TLSALPN01Port are the ports the validator dials: 80 and
	// 443 as the RFCs say when unset. Other values are for tests and labs,
	// where clients answer challenges on high ports.
	HTTP01Port    int `yaml:"http01_port"`
	TLSALPN01Port int `yaml:"tlsalpn01_port"`
	// Resolver is the DNS server (host:port) the validator asks for A, AAAA
	// and TXT records; the system's resolver when unset.
	Resolver string `yaml:"resolver"`
	// Rate limits on new orders; 300 per account and 100 per identifier per
	// hour when unset.
	OrdersPerAccountPerHour    int `yaml:"orders_per_account_per_hour"`
	OrdersPerIdentifierPerHour int `yaml:"orders_per_identifier_per_hour"`
	// TermsOfService and Website are shown in the directory's meta.
	TermsOfService string `yaml:"terms_of_service"`
	Website        string `yaml:"website"`
}

// check fills in defaults and decodes the EAB keys.
func (s Settings) check() (Settings, map[string][]byte, error) {
	if s.Profile == "" {
		return s, nil, fmt.Errorf("acme: the acme section needs a profile: name the profile ACME orders are issued under")
	}
	u, err := url.Parse(s.URL)
	switch {
	case s.URL == "":
		return s, nil, fmt.Errorf("acme: the ACME door needs its public URL (url: https://ca.example.org:8443/acme/)")
	case err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return s, nil, fmt.Errorf("acme: url %q must be an https:// URL without user, query or fragment, such as https://ca.example.org:8443/acme/", s.URL)
	}
	if !strings.HasSuffix(s.URL, "/") {
		s.URL += "/"
	}
	if s.HTTP01Port == 0 {
		s.HTTP01Port = 80
	}
	if s.TLSALPN01Port == 0 {
		s.TLSALPN01Port = 443
	}
	for _, p := range []int{s.HTTP01Port, s.TLSALPN01Port} {
		if p < 1 || p > 65535 {
			return s, nil, fmt.Errorf("acme: challenge port %d is out of range: use 1–65535", p)
		}
	}
	if s.Resolver != "" {
		if _, _, err := net.SplitHostPort(s.Resolver); err != nil {
			return s, nil, fmt.Errorf("acme: resolver %q must be host:port, e.g. 127.0.0.1:53", s.Resolver)
		}
	}
	if s.OrdersPerAccountPerHour == 0 {
		s.OrdersPerAccountPerHour = 300
	}
	if s.OrdersPerIdentifierPerHour == 0 {
		s.OrdersPerIdentifierPerHour = 100
	}
	eab := make(map[string][]byte, len(s.EABKeys))
	for kid, k := range s.EABKeys {
		b, err := base64.RawURLEncoding.DecodeString(k)
		if err != nil || len(b) < 16 {
			return s, nil, fmt.Errorf("acme: eab_keys: key %q must be at least 16 bytes, base64url without padding", kid)
		}
		eab[kid] = b
	}
	if s.ExternalAccountRequired && len(eab) == 0 {
		return s, nil, fmt.Errorf("acme: external_account_required needs at least one key in eab_keys")
	}
	return s, eab, nil
}
