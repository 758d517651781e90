package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/authority"
)

func runTokenCreate(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "token create")
	var cf clientFlags
	cf.register(fs, env, true)
	id := fs.String("identity", "", "identity the token may enroll: a SPIFFE ID, DNS name or IP (comma-separated for several)")
	profile := fs.String("profile", "", "profile the certificate is issued under")
	ttl := fs.String("ttl", "10m", "how long the token stays usable (at most 24h)")
	cidr := fs.String("cidr", "", "only accept the token from this source network, e.g. 10.1.0.0/16")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *id == "" || *profile == "" {
		return usageError("token create needs --identity and --profile")
	}
	c, err := cf.client(true)
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := c.CreateToken(ctx, client.TokenRequest{Identity: *id, Profile: *profile, TTL: *ttl, CIDR: *cidr})
	if err != nil {
		return err
	}
	// The token alone goes to stdout, so it can be captured by a script;
	// what it is goes to stderr.
	fmt.Fprintln(env.stdout, resp.Token)
	fmt.Fprintf(env.stderr, "token %s for %s (profile %s) expires %s; it works once: `mica cert issue --token … --out DIR`\n",
		resp.ID, resp.Identity, resp.Profile, resp.ExpiresAt.Local().Format(time.RFC3339))
	return nil
}

// fetchPinnedRoot fetches the trust bundle without verifying the server and
// keeps it only if it contains the root whose SHA-256 is fingerprint.
func fetchPinnedRoot(ctx context.Context, server, fingerprint string) (*x509.CertPool, error) {
	hc := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}, // checked against the pin below
	}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(server, "/")+"/v1/bundle", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach %s for its trust bundle: %w", server, err)
	}
	defer resp.Body.Close()
	var b client.Bundle
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(&b); err != nil {
		return nil, fmt.Errorf("reading the trust bundle from %s: %w", server, err)
	}
	for _, p := range b.Roots {
		certs, err := parseCertPEM([]byte(p))
		if err != nil {
			continue
		}
		if authority.Fingerprint(certs[0].Raw) == strings.ToLower(fingerprint) {
			pool := x509.NewCertPool()
			pool.AddCert(certs[0])
			return pool, nil
		}
	}
	return nil, fmt.Errorf("the server at %s does not hold the root the token pins (%s…): you may be talking to the wrong server", server, fingerprint[:16])
}
