// Package client is the Go SDK for mica's /v1 REST API: enroll with a
// one-time token, renew over mTLS with the current certificate, and, for
// admins, create tokens and read the inventory.
//
// Start with New, or with Bootstrap on a machine that has only a token: it
// finds the server's root from the token's pin. Every method returns
// *Problem when the server refused the request, with a stable Slug to
// branch on.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Config says where the server is and how to trust and authenticate to it.
type Config struct {
	// Server is the base URL, e.g. https://127.0.0.1:8443.
	Server string
	// Roots are the trust anchors for the server's certificate.
	Roots *x509.CertPool
	// Certificate, when set, is presented for mTLS (admins, renewal).
	Certificate *tls.Certificate
	// GetCertificate, when set, is used instead of Certificate, so a caller
	// can hot-swap its credential.
	GetCertificate func() (*tls.Certificate, error)
	// Timeout bounds each request; default 30s.
	Timeout time.Duration
}

// Client talks to one mica server. It is safe for concurrent use and keeps
// connections alive between requests.
type Client struct {
	base *url.URL
	http *http.Client
	// roots are the trust anchors every handshake verifies the server
	// with; SetRoots replaces them.
	roots atomic.Pointer[x509.CertPool]
}

// maxResponseBytes bounds what the client reads back: inventory pages with
// PEM can be large, anything beyond this is not a mica answer.
const maxResponseBytes = 64 << 20

// New returns a Client.
func New(cfg Config) (*Client, error) {
	u, err := serverURL(cfg.Server)
	if err != nil {
		return nil, err
	}
	if cfg.Roots == nil {
		return nil, errors.New("mica: no trust anchors for the server: pass the root certificate (--ca-file) or a token that pins it")
	}
	c := &Client{base: u}
	c.roots.Store(cfg.Roots)
	// The server's chain is verified in VerifyConnection, against the
	// roots of the moment, instead of by crypto/tls against a pool fixed
	// here: a client that follows the trust bundle (SetRoots) keeps
	// connecting through a CA rotation without being rebuilt.
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, VerifyConnection: c.verifyServer}
	switch {
	case cfg.GetCertificate != nil:
		tlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cfg.GetCertificate() }
	case cfg.Certificate != nil:
		cert := cfg.Certificate
		tlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	// HTTP/1.1 on purpose: a caller renews or asks one thing at a time per
	// connection, and HTTP/2's framing, flow control and goroutine per
	// stream cost the server about an eighth of a renewal's CPU for
	// multiplexing nobody here uses (mica bench renew, same server, h2 vs
	// HTTP/1.1). Concurrent callers get connections of their own.
	tr := &http.Transport{
		TLSClientConfig:     tlsCfg,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	c.http = &http.Client{Transport: tr, Timeout: cfg.timeout()}
	return c, nil
}

// SetRoots replaces the trust anchors for the server's certificate, for
// new connections; connections already open are kept. Give it the roots of
// the trust bundle (Bundle) as they change, so that a root rollover does
// not strand the client on a root the server no longer chains to.
func (c *Client) SetRoots(roots *x509.CertPool) {
	if roots != nil {
		c.roots.Store(roots)
	}
}

// verifyServer does what crypto/tls does for a client, with the roots of
// the moment: the chain the server presents must lead to one of them, be
// valid for server authentication and name the server's host (an IP
// address included: tls leaves ServerName empty for those, so the name
// comes from the URL this client talks to).
func (c *Client) verifyServer(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("mica: the server presented no certificate")
	}
	inters := x509.NewCertPool()
	for _, cert := range cs.PeerCertificates[1:] {
		inters.AddCert(cert)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots: c.roots.Load(), Intermediates: inters, DNSName: c.base.Hostname(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("mica: the server's certificate: %w", err)
	}
	return nil
}

func (cfg Config) timeout() time.Duration {
	if cfg.Timeout == 0 {
		return 30 * time.Second
	}
	return cfg.Timeout
}

func serverURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("mica: server %q must be an https:// URL such as https://127.0.0.1:8443", s)
	}
	return u, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// CreateToken asks for a one-time enrollment token (admins and operators).
func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (*TokenResponse, error) {
	var out TokenResponse
	return &out, c.do(ctx, http.MethodPost, "/v1/tokens", "", req, &out)
}

// Enroll exchanges a token and a CSR (PEM) for a certificate.
func (c *Client) Enroll(ctx context.Context, token string, req CertificateRequest) (*CertificateResponse, error) {
	var out CertificateResponse
	return &out, c.do(ctx, http.MethodPost, "/v1/certificates", token, req, &out)
}

// Renew exchanges the client certificate (from Config) and a CSR for a new
// certificate with the same identity. To keep the current key, set
// req.KeepKey and send no CSR: the server then certifies the key the TLS
// handshake proved, which costs it a signature check less.
func (c *Client) Renew(ctx context.Context, req CertificateRequest) (*CertificateResponse, error) {
	var out CertificateResponse
	return &out, c.do(ctx, http.MethodPost, "/v1/certificates/renew", "", req, &out)
}

// ListFilter selects inventory records; zero fields select everything.
type ListFilter struct {
	Identity       string
	Profile        string
	Status         string // active, revoked or expired
	ExpiringWithin string // e.g. "7d"
	Limit, Offset  int
	WithPEM        bool
}

// ListCertificates reads the inventory.
func (c *Client) ListCertificates(ctx context.Context, f ListFilter) ([]Certificate, error) {
	q := url.Values{}
	for k, v := range map[string]string{"identity": f.Identity, "profile": f.Profile, "status": f.Status, "expiring_within": f.ExpiringWithin} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.Limit > 0 {
		q.Set("limit", fmt.Sprint(f.Limit))
	}
	if f.Offset > 0 {
		q.Set("offset", fmt.Sprint(f.Offset))
	}
	if f.WithPEM {
		q.Set("pem", "true")
	}
	var out CertificateList
	err := c.do(ctx, http.MethodGet, "/v1/certificates?"+q.Encode(), "", nil, &out)
	return out.Certificates, err
}

// Certificate reads one inventory record by serial (hex).
func (c *Client) Certificate(ctx context.Context, serial string) (*Certificate, error) {
	var out Certificate
	return &out, c.do(ctx, http.MethodGet, "/v1/certificates/"+url.PathEscape(serial), "", nil, &out)
}

// Revoke revokes a certificate; reason is an RFC 5280 name or "".
func (c *Client) Revoke(ctx context.Context, serial, reason string) (*Certificate, error) {
	var out Certificate
	return &out, c.do(ctx, http.MethodPost, "/v1/certificates/"+url.PathEscape(serial)+"/revoke", "", RevokeRequest{Reason: reason}, &out)
}

// RevokeMatching revokes by fingerprint (one certificate) or by identity
// (every live certificate of it) and returns what it revoked.
func (c *Client) RevokeMatching(ctx context.Context, req RevokeMatchingRequest) ([]Certificate, error) {
	var out CertificateList
	err := c.do(ctx, http.MethodPost, "/v1/certificates/revoke", "", req, &out)
	return out.Certificates, err
}

// Deny puts an identity on the deny list (admins): it can be neither
// issued nor renewed until allowed again.
func (c *Client) Deny(ctx context.Context, identity, reason string) (*Denial, error) {
	var out Denial
	return &out, c.do(ctx, http.MethodPost, "/v1/identities/deny", "", DenyRequest{Identity: identity, Reason: reason}, &out)
}

// Allow takes an identity off the deny list (admins).
func (c *Client) Allow(ctx context.Context, identity, reason string) (*Denial, error) {
	var out Denial
	return &out, c.do(ctx, http.MethodPost, "/v1/identities/allow", "", DenyRequest{Identity: identity, Reason: reason}, &out)
}

// DeniedIdentities reads the deny list (auditors and up).
func (c *Client) DeniedIdentities(ctx context.Context) ([]Denial, error) {
	var out DenialList
	err := c.do(ctx, http.MethodGet, "/v1/identities/denied", "", nil, &out)
	return out.Denied, err
}

// Bundle fetches the trust bundle.
func (c *Client) Bundle(ctx context.Context) (*Bundle, error) {
	var out Bundle
	return &out, c.do(ctx, http.MethodGet, "/v1/bundle", "", nil, &out)
}

// JWTSVID asks for a JWT-SVID for the identity of the client certificate.
func (c *Client) JWTSVID(ctx context.Context, req JWTSVIDRequest) (*JWTSVID, error) {
	var out JWTSVID
	return &out, c.do(ctx, http.MethodPost, "/v1/jwt-svids", "", req, &out)
}

// JWTBundle fetches the JWT-SVID verification keys as JWKS JSON, raw, so
// callers can hand it to any JOSE library (go-spiffe's jwtbundle.Parse).
func (c *Client) JWTBundle(ctx context.Context) ([]byte, error) {
	var out json.RawMessage
	return out, c.do(ctx, http.MethodGet, "/v1/jwt-bundle", "", nil, &out)
}

// Stats fetches the server's own figures (admins).
func (c *Client) Stats(ctx context.Context) (*Stats, error) {
	var out Stats
	return &out, c.do(ctx, http.MethodGet, "/v1/server/stats", "", nil, &out)
}

func (c *Client) do(ctx context.Context, method, path, bearer string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("mica: encoding request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	rel, err := url.Parse(path)
	if err != nil {
		return fmt.Errorf("mica: bad path %q: %w", path, err)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.ResolveReference(rel).String(), body)
	if err != nil {
		return fmt.Errorf("mica: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("mica: cannot reach %s: %w", c.base.Host, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return fmt.Errorf("mica: reading response from %s: %w", c.base.Host, err)
	}
	if resp.StatusCode >= 300 {
		p := &Problem{Status: resp.StatusCode, Title: resp.Status}
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
			if err := json.Unmarshal(data, p); err != nil {
				p.Detail = "unreadable problem document"
			}
		}
		if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
			p.RetryAfter = time.Duration(secs) * time.Second
		}
		return p
	}
	if resp.StatusCode == http.StatusAccepted && resp.Header.Get("Mica-Approval") != "" {
		pe := &PendingError{}
		if err := json.Unmarshal(data, &pe.Approval); err != nil {
			return fmt.Errorf("mica: unexpected response from %s: %w", c.base.Host, err)
		}
		return pe
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("mica: unexpected response from %s: %w", c.base.Host, err)
		}
	}
	return nil
}
