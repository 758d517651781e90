package acme

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Challenge types (RFC 8555 §8.3, §8.4; RFC 8737).
const (
	challengeHTTP01    = "http-01"
	challengeDNS01     = "dns-01"
	challengeTLSALPN01 = "tls-alpn-01"
)

// validationTimeout bounds one validation, lookups and connection included.
const validationTimeout = 20 * time.Second

// idPeACMEIdentifier is the tls-alpn-01 certificate extension (RFC 8737 §3).
var idPeACMEIdentifier = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}

// validator proves control of identifiers by the three challenge types.
type validator struct {
	resolver *net.Resolver
	dialer   *net.Dialer
	httpPort string
	tlsPort  string
}

func newValidator(set Settings) *validator {
	v := &validator{resolver: net.DefaultResolver, httpPort: strconv.Itoa(set.HTTP01Port), tlsPort: strconv.Itoa(set.TLSALPN01Port)}
	if set.Resolver != "" {
		addr := set.Resolver
		v.resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
	}
	v.dialer = &net.Dialer{Timeout: 10 * time.Second, Resolver: v.resolver}
	return v
}

func (v *validator) check(ctx context.Context, typ string, id ident, token, keyAuth string) *problem {
	switch typ {
	case challengeHTTP01:
		return v.http01(ctx, id, token, keyAuth)
	case challengeDNS01:
		return v.dns01(ctx, id, keyAuth)
	case challengeTLSALPN01:
		return v.tlsALPN01(ctx, id, keyAuth)
	}
	return malformed("unknown challenge type %q", typ)
}

// dialAddr is where to reach an identifier on port: its A/AAAA records
// through the configured resolver, or the IP itself.
func (v *validator) dialAddr(ctx context.Context, id ident, port string) (string, *problem) {
	if id.Type == "ip" {
		return net.JoinHostPort(id.Value, port), nil
	}
	addrs, err := v.resolver.LookupHost(ctx, id.Value+".")
	if err != nil || len(addrs) == 0 {
		return "", newProblem(errDNS, http.StatusBadRequest, "no A or AAAA record for %s: %v", id.Value, err)
	}
	return net.JoinHostPort(addrs[0], port), nil
}

// http01 fetches http://<identifier>/.well-known/acme-challenge/<token>
// (§8.3); the body must be the key authorization.
func (v *validator) http01(ctx context.Context, id ident, token, keyAuth string) *problem {
	addr, prob := v.dialAddr(ctx, id, v.httpPort)
	if prob != nil {
		return prob
	}
	host := id.Value
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	client := &http.Client{
		Transport: &http.Transport{
			// Always the address resolved above: the Host header names the
			// identifier, the connection goes where the identifier points.
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return v.dialer.DialContext(ctx, network, addr)
			},
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       validationTimeout,
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/.well-known/acme-challenge/"+token, nil)
	resp, err := client.Do(req)
	if err != nil {
		return newProblem(errConnection, http.StatusBadRequest, "http-01: fetching %s: %v", req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return newProblem(errUnauthorized, http.StatusForbidden, "http-01: %s answered %s, not 200 with the key authorization", req.URL, resp.Status)
	}
	if got := string(bytes.TrimRight(body, " \r\n\t")); subtle.ConstantTimeCompare([]byte(got), []byte(keyAuth)) != 1 {
		return newProblem(errIncorrectResponse, http.StatusForbidden, "http-01: %s answered %q, not the key authorization for this account's key", req.URL, truncate(got, 100))
	}
	return nil
}

// dns01 looks for the digest of the key authorization in a TXT record at
// _acme-challenge.<identifier> (§8.4).
func (v *validator) dns01(ctx context.Context, id ident, keyAuth string) *problem {
	if id.Type != "dns" {
		return malformed("dns-01 proves only DNS names")
	}
	sum := sha256.Sum256([]byte(keyAuth))
	want := base64.RawURLEncoding.EncodeToString(sum[:])
	name := "_acme-challenge." + id.Value + "."
	txts, err := v.resolver.LookupTXT(ctx, name)
	if err != nil {
		return newProblem(errDNS, http.StatusBadRequest, "dns-01: looking up TXT %s: %v", name, err)
	}
	for _, t := range txts {
		if subtle.ConstantTimeCompare([]byte(t), []byte(want)) == 1 {
			return nil
		}
	}
	return newProblem(errIncorrectResponse, http.StatusForbidden, "dns-01: no TXT record at %s holds the digest of the key authorization (found %d records)", name, len(txts))
}

// tlsALPN01 connects with ALPN acme-tls/1 and SNI the identifier; the
// certificate must name only the identifier and carry the critical
// acmeIdentifier extension holding the key authorization's digest (RFC 8737).
func (v *validator) tlsALPN01(ctx context.Context, id ident, keyAuth string) *problem {
	if id.Type != "dns" {
		return malformed("tls-alpn-01 is offered for DNS names only")
	}
	addr, prob := v.dialAddr(ctx, id, v.tlsPort)
	if prob != nil {
		return prob
	}
	d := &tls.Dialer{NetDialer: v.dialer, Config: &tls.Config{
		ServerName: id.Value, NextProtos: []string{"acme-tls/1"},
		// The certificate is self-signed by design; it is judged below.
		InsecureSkipVerify: true, MinVersion: tls.VersionTLS12,
	}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return newProblem(errTLS, http.StatusBadRequest, "tls-alpn-01: connecting to %s: %v", addr, err)
	}
	defer conn.Close()
	st := conn.(*tls.Conn).ConnectionState()
	if st.NegotiatedProtocol != "acme-tls/1" {
		return newProblem(errTLS, http.StatusBadRequest, "tls-alpn-01: %s did not negotiate ALPN acme-tls/1", addr)
	}
	if len(st.PeerCertificates) == 0 {
		return newProblem(errTLS, http.StatusBadRequest, "tls-alpn-01: %s sent no certificate", addr)
	}
	if err := checkALPNCert(st.PeerCertificates[0], id.Value, keyAuth); err != nil {
		return newProblem(errIncorrectResponse, http.StatusForbidden, "tls-alpn-01: %v", err)
	}
	return nil
}

func checkALPNCert(c *x509.Certificate, name, keyAuth string) error {
	if len(c.DNSNames) != 1 || !strings.EqualFold(c.DNSNames[0], name) || len(c.IPAddresses) > 0 || len(c.URIs) > 0 {
		return fmt.Errorf("the certificate must name exactly %s, not %v", name, c.DNSNames)
	}
	sum := sha256.Sum256([]byte(keyAuth))
	for _, ext := range c.Extensions {
		if !ext.Id.Equal(idPeACMEIdentifier) {
			continue
		}
		if !ext.Critical {
			return errors.New("the acmeIdentifier extension must be critical")
		}
		var got []byte
		if rest, err := asn1.Unmarshal(ext.Value, &got); err != nil || len(rest) > 0 {
			return errors.New("the acmeIdentifier extension is not an OCTET STRING")
		}
		if subtle.ConstantTimeCompare(got, sum[:]) != 1 {
			return errors.New("the acmeIdentifier extension does not hold the digest of this account's key authorization")
		}
		return nil
	}
	return errors.New("the certificate lacks the acmeIdentifier extension")
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
