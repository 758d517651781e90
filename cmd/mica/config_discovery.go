package main

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mica-pki/mica/credential"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/discover"
	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/telemetry"
	"github.com/mica-pki/mica/internal/webhook"
)

// DiscoveryConfig is the config file's discovery section.
type DiscoveryConfig struct {
	// Owners say who answers for discovered certificates; the first rule
	// that matches names the owner.
	Owners []discover.OwnerRule `yaml:"owners"`
	// AgentProfiles are the profiles whose certificates may report
	// discoveries (agents on hosts); operators and admins always may.
	AgentProfiles []string `yaml:"agent_profiles"`
	// RootsFile holds trust anchors (PEM) that discovered chains should
	// reach besides mica's and the system's; a chain that reaches none is
	// flagged missing-intermediate.
	RootsFile string `yaml:"roots_file"`
	// ExpiryNotices is how long before expiry a certificate at risk is
	// announced as a cert.expiring event (14d by default; "0s" for never).
	ExpiryNotices *duration.Duration `yaml:"expiry_notices"`
}

// WebhookConfig is one endpoint of the config file's webhooks section.
type WebhookConfig struct {
	Name string `yaml:"name"`
	URL  string `yaml:"url"`
	// SecretFile holds the HMAC signing secret (make one with `mica
	// webhook secret`); a relative path is from the config file's
	// directory.
	SecretFile string `yaml:"secret_file"`
	// Types, Profiles and Identities select events (package webhook).
	Types      []string          `yaml:"types"`
	Profiles   []string          `yaml:"profiles"`
	Identities []string          `yaml:"identities"`
	Timeout    duration.Duration `yaml:"timeout"`
	RetryFor   duration.Duration `yaml:"retry_for"`
	// Concurrency is how many events are in flight at once (default 4).
	Concurrency int `yaml:"concurrency"`
	// CAFile verifies an https receiver whose certificate a private CA
	// issued (mica's own root, say); the system's roots otherwise.
	CAFile string `yaml:"ca_file"`
}

// checkDiscovery validates the discovery and webhooks sections at load,
// so that a mistake stops the start, not the first report or event.
func (c *Config) checkDiscovery(name string) error {
	owners, err := discover.CompileOwners(c.Discovery.Owners)
	if err != nil {
		return fmt.Errorf("config %s: discovery: %w", name, err)
	}
	c.owners = owners
	for _, p := range c.Discovery.AgentProfiles {
		if _, ok := c.Profiles[p]; !ok {
			return fmt.Errorf("config %s: discovery: agent_profiles: %q is not among the profiles: name one of them", name, p)
		}
	}
	if n := c.Discovery.ExpiryNotices; n != nil && time.Duration(*n) < 0 {
		return fmt.Errorf("config %s: discovery: expiry_notices must not be negative", name)
	}
	seen := map[string]bool{}
	for i, w := range c.Webhooks {
		switch {
		case w.Name == "" || seen[w.Name]:
			return fmt.Errorf("config %s: webhooks[%d]: every endpoint needs a name of its own", name, i)
		case w.SecretFile == "":
			return fmt.Errorf("config %s: webhook %s: secret_file is required: make a secret with `mica webhook secret > FILE`", name, w.Name)
		}
		seen[w.Name] = true
		if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("config %s: webhook %s: url %q must be an http(s) URL", name, w.Name, w.URL)
		}
	}
	return nil
}

// expiryNoticeWindow is the configured window, or the default.
func (c *Config) expiryNoticeWindow() time.Duration {
	if c.Discovery.ExpiryNotices == nil {
		return authority.DefaultExpiryNoticeWindow
	}
	return time.Duration(*c.Discovery.ExpiryNotices)
}

// relativeTo resolves a path in the config file relative to its
// directory.
func relativeTo(configPath, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(configPath), p)
}

// discoveryConfig is the authority's discovery settings: the operator's
// extra roots and the system's, the owner rules, the agent profiles.
func (c *Config) discoveryConfig() (authority.DiscoveryConfig, error) {
	roots := systemRoots()
	if c.Discovery.RootsFile != "" {
		data, err := os.ReadFile(relativeTo(c.path, c.Discovery.RootsFile))
		if err != nil {
			return authority.DiscoveryConfig{}, fmt.Errorf("discovery: roots_file: %w", err)
		}
		extra, err := credential.ParseCertificates(data)
		if err != nil {
			return authority.DiscoveryConfig{}, fmt.Errorf("discovery: roots_file: %w", err)
		}
		roots = append(roots, extra...)
	}
	return authority.DiscoveryConfig{Roots: roots, Owners: c.owners, AgentProfiles: c.Discovery.AgentProfiles}, nil
}

// systemRootFiles are where Linux distributions keep the system's trust
// anchors (the list crypto/x509 reads, which it does not expose).
var systemRootFiles = []string{
	"/etc/ssl/certs/ca-certificates.crt",
	"/etc/pki/tls/certs/ca-bundle.crt",
	"/etc/ssl/ca-bundle.pem",
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
	"/etc/ssl/cert.pem",
}

// systemRoots reads the first system bundle that exists; none is no error
// (discovered chains are then judged against mica's roots and the
// configured ones).
func systemRoots() []*x509.Certificate {
	for _, f := range systemRootFiles {
		if data, err := os.ReadFile(f); err == nil {
			if certs, err := credential.ParseCertificates(data); err == nil {
				return certs
			}
		}
	}
	return nil
}

// webhookEndpoints reads the secrets and CA files of the webhooks section.
func (c *Config) webhookEndpoints() ([]webhook.Endpoint, error) {
	var out []webhook.Endpoint
	for _, w := range c.Webhooks {
		text, err := os.ReadFile(relativeTo(c.path, w.SecretFile))
		if err != nil {
			return nil, fmt.Errorf("webhook %s: %w", w.Name, err)
		}
		secret, err := webhook.ParseSecret(string(text))
		if err != nil {
			return nil, fmt.Errorf("webhook %s: %s: %w", w.Name, w.SecretFile, err)
		}
		ep := webhook.Endpoint{Name: w.Name, URL: w.URL, Secret: secret, Types: w.Types, Profiles: w.Profiles, Identities: w.Identities,
			Timeout: time.Duration(w.Timeout), RetryFor: time.Duration(w.RetryFor), Concurrency: w.Concurrency}
		if w.CAFile != "" {
			if ep.RootCAs, err = loadPool(relativeTo(c.path, w.CAFile)); err != nil {
				return nil, fmt.Errorf("webhook %s: %w", w.Name, err)
			}
		}
		out = append(out, ep)
	}
	return out, nil
}

// webhookTypes shows an endpoint's type filter as configured.
func webhookTypes(types []string) []string {
	out := make([]string, len(types))
	for i, t := range types {
		out[i] = strings.TrimPrefix(t, webhook.TypePrefix)
	}
	return out
}

// registerDiscoveryMetrics wires the discovered-certificate gauges.
func registerDiscoveryMetrics(p *parts, log *slog.Logger) error {
	ds, ok := p.store.(store.DiscoveryStore)
	if !ok {
		return nil
	}
	var classes, findings []string
	for _, c := range discover.Classes() {
		classes = append(classes, string(c))
	}
	for _, f := range discover.Findings() {
		// Expiry is in mica_discovered_certificates' window label; it is
		// judged when read, not stored as a finding.
		if f != discover.Expired && f != discover.NotYetValid {
			findings = append(findings, string(f))
		}
	}
	_, err := telemetry.NewDiscoveryMetrics(p.registry, telemetry.DiscoverySources{ByExpiry: ds.DiscoveredByExpiry, Findings: ds.DiscoveredFindings,
		ClassNames: classes, FindingNames: findings, Logger: log})
	return err
}
