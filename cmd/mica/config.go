package main

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/mica-pki/mica/internal/acme"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/discover"
	"github.com/mica-pki/mica/internal/keys/custody"
	"github.com/mica-pki/mica/internal/limits"
	"github.com/mica-pki/mica/internal/ocsp"
	"github.com/mica-pki/mica/internal/policy"
	"github.com/mica-pki/mica/internal/rotation"
	"github.com/mica-pki/mica/internal/strictyaml"
	"github.com/mica-pki/mica/internal/telemetry"
)

// Config is the config file (mica.yaml): profiles under version control, and
// the few server settings. Every zero value is safe: it means the documented
// default.
type Config struct {
	// TrustDomain is the SPIFFE trust domain of every identity mica issues.
	TrustDomain string `yaml:"trust_domain"`
	// PolicyDocument is the policy: profiles, admins, roles, approvals
	// (docs/governance.md). It is versioned in the database; this file's
	// copy is the first version, and a proposal (`mica policy propose`,
	// SIGHUP) after that.
	authority.PolicyDocument `yaml:",inline"`
	// Listen is the API's address; 127.0.0.1:8443 by default.
	Listen string `yaml:"listen"`
	// ServerNames are the DNS names and IPs in the server's own certificate;
	// localhost and 127.0.0.1 by default.
	ServerNames []string `yaml:"server_names"`
	// Database is empty for the embedded SQLite store in the data directory,
	// or a postgres:// URL.
	Database string `yaml:"database"`
	// ACME, when present, serves RFC 8555 under /acme/ on the API listener,
	// issuing under the profile it names.
	ACME *acme.Settings `yaml:"acme"`
	// PublicURL is where relying parties reach the plain-HTTP revocation
	// endpoints (CRL, OCSP); every certificate names it in its CRL
	// distribution point and OCSP URL. Default: http://<http_listen>.
	PublicURL string `yaml:"public_url"`
	// HTTPListen is the plain-HTTP listener for CRL and OCSP; default
	// 127.0.0.1:8080, "off" for none.
	HTTPListen string `yaml:"http_listen"`
	// MetricsListen is the plain-HTTP /metrics listener (Prometheus);
	// 127.0.0.1:9123 when absent, "off" or "" for none.
	MetricsListen *string `yaml:"metrics_listen"`
	// Tracing exports OpenTelemetry spans of the issuance pipeline over
	// OTLP when it names an endpoint; off otherwise.
	Tracing telemetry.TracingConfig `yaml:"tracing"`
	// OCSP bounds the OCSP responders' cache of signed responses
	// (cache_size, every issuing CA's together; default 32MiB).
	OCSP ocsp.Settings `yaml:"ocsp"`
	// Limits are rate limits per identity, requester and source, and
	// Anomalies what the anomaly detector alerts on or refuses; both
	// server-wide with per-profile overrides (docs/limits.md).
	Limits    limits.Limits    `yaml:"limits"`
	Anomalies limits.Anomalies `yaml:"anomalies"`
	// Keys chooses where the CA keys live: key_backend (file or pkcs11)
	// and the pkcs11 section.
	Keys custody.Settings `yaml:",inline"`
	// CA says how the CA rotates (lifetimes, thresholds).
	CA rotation.Settings `yaml:"ca"`
	// Discovery configures discovered certificates and Webhooks the
	// receivers of lifecycle events (config_discovery.go, docs/discovery.md).
	Discovery DiscoveryConfig `yaml:"discovery"`
	Webhooks  []WebhookConfig `yaml:"webhooks"`

	// rules are Limits and Anomalies compiled at load.
	rules *limits.Rules
	// publicURLGiven says public_url was in the file; otherwise
	// settlePublicURL derives it from the plain-HTTP listener.
	publicURLGiven bool
	// policy is PolicyDocument compiled at load (with mica's reserved
	// profiles and names), and doc its canonical text.
	policy authority.CompiledPolicy
	doc    []byte
	// owners are the discovery owner rules, compiled at load.
	owners *discover.Owners
	// path is the file the config was read from; paths in it are
	// relative to its directory.
	path string
}

const (
	defaultListen     = "127.0.0.1:8443"
	defaultHTTPListen = "127.0.0.1:8080"
	defaultPublicURL  = "http://127.0.0.1:8080"
	defaultMetrics    = "127.0.0.1:9123"
	configFileName    = "mica.yaml"
	passphraseEnv     = "MICA_PASSPHRASE"
	devPassphraseFile = "passphrase"
)

// loadConfig reads and validates the config file, and adds mica's reserved
// profiles. Unknown fields are errors so a typo cannot silently mean a default.
func loadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w (run `mica init` to write one, or pass --config)", err)
	}
	return parseConfig(data, path)
}

func parseConfig(data []byte, name string) (*Config, error) {
	c := Config{path: name}
	if err := strictyaml.Decode(data, &c); err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	if c.Listen == "" {
		c.Listen = defaultListen
	}
	if c.PublicURL != "" {
		u, err := checkPublicURL(c.PublicURL)
		if err != nil {
			return nil, fmt.Errorf("config %s: public_url: %w", name, err)
		}
		c.PublicURL, c.publicURLGiven = u, true
	}
	if c.HTTPListen == "" {
		c.HTTPListen = defaultHTTPListen
	}
	if c.MetricsListen == nil {
		c.MetricsListen = new(defaultMetrics)
	}
	if err := c.Keys.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	if err := c.Tracing.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	if _, err := c.OCSP.CacheBytes(); err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	if len(c.ServerNames) == 0 {
		c.ServerNames = []string{"localhost", "127.0.0.1"}
	}
	if c.TrustDomain == "" {
		return nil, fmt.Errorf("config %s: trust_domain is required (e.g. trust_domain: example.org)", name)
	}
	if c.ACME != nil {
		if _, ok := c.Profiles[c.ACME.Profile]; !ok {
			return nil, fmt.Errorf("config %s: acme: profile %q is not among the profiles: name one of them", name, c.ACME.Profile)
		}
	}
	var err error
	if c.policy, err = c.PolicyDocument.Compile(c.TrustDomain, c.ServerNames); err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	if c.doc, err = c.PolicyDocument.Marshal(); err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	rules, err := limits.Compile(c.Limits, c.Anomalies, c.profileNames())
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	c.rules = rules
	if err := c.checkDiscovery(name); err != nil {
		return nil, err
	}
	return &c, nil
}

// profileNames are every profile the policy applies, mica's own included:
// also the values the metrics' profile label may take besides "other" and
// "none".
func (c *Config) profileNames() []string {
	return slices.Sorted(maps.Keys(c.profiles()))
}

// profiles are the policy's profiles with mica's reserved ones.
func (c *Config) profiles() map[string]policy.ProfileConfig {
	cfg, err := authority.WithReserved(policy.Config{TrustDomain: c.TrustDomain, Profiles: c.Profiles}, c.ServerNames)
	if err != nil {
		return c.Profiles // compiled at load, so this does not happen
	}
	return cfg.Profiles
}

// engine is the file's compiled policy engine.
func (c *Config) engine() *policy.Engine { return c.policy.Policy.(*policy.Engine) }

// publicURLAsGiven is public_url as the file says it, "" for derived.
func (c *Config) publicURLAsGiven() string {
	if c.publicURLGiven {
		return c.PublicURL
	}
	return ""
}

// checkPublicURL accepts an http(s) URL with a host and no query, and
// drops a trailing slash.
func checkPublicURL(s string) (string, error) {
	s = strings.TrimSuffix(s, "/")
	if u, err := url.Parse(s); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return "", fmt.Errorf("%q must be an http:// URL such as %s (where relying parties fetch CRLs and ask OCSP)", s, defaultPublicURL)
	}
	return s, nil
}

// settlePublicURL decides the URL every certificate names for its CRL and
// OCSP: --public-url, else public_url, else the plain-HTTP listener's own
// address httpAddr (as bound, so a port 0 becomes the real port), so that
// moving the listener moves what certificates say. A listener on every
// address cannot be named; then the URL must be given.
func (c *Config) settlePublicURL(flag, httpAddr string) error {
	switch {
	case flag != "":
		u, err := checkPublicURL(flag)
		if err != nil {
			return usageError("--public-url: %v", err)
		}
		c.PublicURL = u
		return nil
	case c.publicURLGiven:
		return nil
	case httpAddr == "off":
		c.PublicURL = defaultPublicURL
		return nil
	}
	host, port, err := net.SplitHostPort(httpAddr)
	if err != nil {
		return fmt.Errorf("http_listen %q: %v: use host:port, or off", httpAddr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return fmt.Errorf("the CRL and OCSP listener %s takes every address, so certificates cannot name it from that: "+
			"say where relying parties reach it with --public-url or public_url: (e.g. http://ca.example.org:%s)", httpAddr, port)
	}
	c.PublicURL = "http://" + net.JoinHostPort(host, port)
	return nil
}

// defaultConfig is what `mica init` writes: a starting point to edit and put
// under version control.
func defaultConfig(trustDomain, adminID, dbURL string) string {
	database := "# database: postgres://user@host/mica   # default: SQLite in the data directory"
	if dbURL != "" {
		database = fmt.Sprintf("database: %q   # this CA's records live here; the server refuses any other", dbURL)
	}
	return fmt.Sprintf(`# mica config: profiles say who may obtain which identities, for how long,
# with which keys and usages. Check changes with `+"`mica policy check mica.yaml`"+`.
trust_domain: %[1]s
listen: %[3]s
server_names: [localhost, 127.0.0.1]
%[4]s
# public_url: http://ca.example.org     # where relying parties fetch CRLs and ask OCSP; named in every certificate (default http://<http_listen>)
# http_listen: 127.0.0.1:8080           # plain-HTTP listener for CRL and OCSP ("off" for none)
# metrics_listen: 127.0.0.1:9123        # Prometheus /metrics ("off" for none)
# tracing:                              # OpenTelemetry traces of the issuance pipeline (off unless an endpoint is set)
#   otlp_endpoint: http://127.0.0.1:4318
#   sample_ratio: 0.1
# ocsp:
#   cache_size: 32MiB                   # signed OCSP responses kept in memory, about 1.8KiB each (docs/operations.md, Memory)

admins:
  %[2]s: admin                  # one role, or several: [operator, security]

# Custom roles, approvals by several people and separation of duties
# (docs/governance.md). The policy (profiles, admins, roles, approvals) is
# versioned in the database: change it with `+"`mica policy propose mica.yaml`"+`
# or SIGHUP, and every server applies it within seconds.
# roles:
#   security: {permissions: [approval:decide, approval:read, audit:read]}
# approvals:
#   - {action: policy.change, required: 1, approvers: admin}

profiles:
  service:
    spiffe: ["/**"]            # any SPIFFE ID in %[1]s; narrow this, e.g. ["/billing/*"]
    default_ttl: 1h
    max_ttl: 24h
    key_types: [ecdsa-p256, ecdsa-p384, ed25519]
    ext_key_usage: [clientAuth, serverAuth]
  server:
    dns: ["*.svc.%[1]s"]
    ips: ["127.0.0.0/8", "10.0.0.0/8"]   # the server's own names (server_names) stay mica's: no profile issues them
    default_ttl: 24h
    max_ttl: 72h
    ext_key_usage: [serverAuth]
    # expected_networks: ["10.0.0.0/8"]   # requests from elsewhere are an anomaly (alert or refuse)

# Rate limits and anomaly detection, server-wide; override per profile under
# profiles: (see docs/limits.md). These are the defaults:
# limits:
#   per_identity: {rate: 60/h, burst: 10}
#   per_requester: {rate: off}
#   per_source: {rate: off}
# anomalies:
#   renewal_storm: {action: alert, max_renewals_per_lifetime: 4}
#   issuance_burst: {action: alert, window: 1m, per_profile: 1000, per_requester: 300}
#   unexpected_network: {action: alert}
`, trustDomain, adminID, defaultListen, database)
}

// dataPaths are the files in a data directory.
type dataPaths struct{ dir string }

func (d dataPaths) config() string     { return filepath.Join(d.dir, configFileName) }
func (d dataPaths) caDir() string      { return filepath.Join(d.dir, "ca") }
func (d dataPaths) tokenKey() string   { return filepath.Join(d.dir, "token.key") }
func (d dataPaths) jwtKey() string     { return filepath.Join(d.dir, "jwt.key") }
func (d dataPaths) adminDir() string   { return filepath.Join(d.dir, "admin") }
func (d dataPaths) auditKey() string   { return filepath.Join(d.dir, "audit.key") }
func (d dataPaths) database() string   { return filepath.Join(d.dir, "mica.db") }
func (d dataPaths) passphrase() string { return filepath.Join(d.dir, devPassphraseFile) }
func (d dataPaths) rootCert() string   { return filepath.Join(d.caDir(), "root.pem") }

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// errNotInitialised is returned when a data directory has no CA yet.
var errNotInitialised = errors.New("the data directory has no CA yet")
