package client

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mica-pki/mica/credential"
)

// Bootstrap returns a Client for a machine that holds nothing but a one-time
// enrollment token. The token pins the SHA-256 of the server's root, so
// Bootstrap fetches the trust bundle once without knowing whom to trust, and
// accepts it only if the bundle holds that root and the very connection it
// came over is the server's, certified under that root. The Client it
// returns trusts that root alone and verifies the server on every
// connection, as New's does. cfg is as for New, with Roots left empty.
func Bootstrap(ctx context.Context, cfg Config, token string) (*Client, error) {
	if cfg.Roots != nil {
		return nil, errors.New("mica: Bootstrap takes the server's root from the token: leave Config.Roots empty, or call New with the roots you have")
	}
	base, err := serverURL(cfg.Server)
	if err != nil {
		return nil, err
	}
	pin, err := tokenRootPin(token)
	if err != nil {
		return nil, err
	}
	root, err := fetchPinnedRoot(ctx, base, pin, cfg.timeout())
	if err != nil {
		return nil, err
	}
	cfg.Roots = x509.NewCertPool()
	cfg.Roots.AddCert(root)
	return New(cfg)
}

// maxTokenBytes bounds a token: a mica token is well under 1 KiB.
const maxTokenBytes = 8 << 10

// tokenRootPin reads the root's SHA-256 (claim root_fp) from a token without
// verifying its signature: the server does that, and the pin only chooses
// whom to trust for the first contact.
func tokenRootPin(token string) ([]byte, error) {
	token = strings.TrimSpace(token)
	parts := strings.Split(token, ".")
	if len(token) > maxTokenBytes || len(parts) != 3 {
		return nil, errors.New("mica: this is not a mica enrollment token (three dot-separated parts): ask an admin for one with `mica token create`")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, errors.New("mica: the token's claims are not base64url: was it copied whole?")
	}
	var claims struct {
		RootFP string `json:"root_fp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, errors.New("mica: the token's claims are not JSON: was it copied whole?")
	}
	if claims.RootFP == "" {
		return nil, errors.New("mica: the token pins no root: pass the server's root certificate (Config.Roots, --ca-file)")
	}
	pin, err := hex.DecodeString(claims.RootFP)
	if err != nil || len(pin) != sha256.Size {
		return nil, errors.New("mica: the token's root_fp is not a hex SHA-256: ask an admin for a new token")
	}
	return pin, nil
}

// maxBundleBytes bounds the trust bundle read from a server not yet trusted.
const maxBundleBytes = 1 << 20

func fetchPinnedRoot(ctx context.Context, base *url.URL, pin []byte, timeout time.Duration) (*x509.Certificate, error) {
	tr := &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Nothing is trusted yet: the connection is checked below against
		// the root the token pins, before anything from it is used.
		InsecureSkipVerify: true,
	}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: timeout}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base.ResolveReference(&url.URL{Path: "/v1/bundle"}).String(), nil)
	if err != nil {
		return nil, fmt.Errorf("mica: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("mica: cannot reach %s for its trust bundle: %w", base.Host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("mica: %s answered %s for its trust bundle: is this a mica server?", base.Host, resp.Status)
	}
	var b Bundle
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBundleBytes)).Decode(&b); err != nil {
		return nil, fmt.Errorf("mica: reading the trust bundle from %s: %w", base.Host, err)
	}
	var root *x509.Certificate
	inters := x509.NewCertPool()
	for _, p := range b.Roots {
		if c := firstCertificate(p); c != nil {
			sum := sha256.Sum256(c.Raw)
			if subtle.ConstantTimeCompare(sum[:], pin) == 1 {
				root = c
			}
		}
	}
	if root == nil {
		return nil, fmt.Errorf("mica: the server at %s does not hold the root the token pins (%x…): you may be talking to the wrong server", base.Host, pin[:8])
	}
	for _, p := range b.Intermediates {
		if c := firstCertificate(p); c != nil {
			inters.AddCert(c)
		}
	}
	peers := resp.TLS.PeerCertificates
	for _, c := range peers[1:] {
		inters.AddCert(c)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	if _, err := peers[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, DNSName: base.Hostname(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return nil, fmt.Errorf("mica: %s served the pinned root but its own certificate does not chain to it (%v): you may be talking to an impostor", base.Host, err)
	}
	return root, nil
}

// firstCertificate parses the first certificate of a PEM string, or nil.
func firstCertificate(p string) *x509.Certificate {
	certs, err := credential.ParseCertificates([]byte(p))
	if err != nil {
		return nil
	}
	return certs[0]
}
