package policy

import (
	"fmt"
	"time"

	"github.com/mica-pki/mica/identity"

	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/strictyaml"
)

// Config is the policy section of the operator's config file. It lives under
// version control, so every field is plain text a reviewer can read; the zero
// value of each optional field means the documented default.
type Config struct {
	// TrustDomain is the SPIFFE trust domain every SPIFFE ID must belong to,
	// e.g. "example.org". Required when any profile allows SPIFFE IDs.
	TrustDomain string `yaml:"trust_domain"`
	// Profiles by name. A request names exactly one.
	Profiles map[string]ProfileConfig `yaml:"profiles"`
	// Reserved are the names that belong to mica itself; not read from
	// the file (the authority fills it in).
	Reserved Reserved `yaml:"-"`
}

// Reserved names belong to mica itself (its administrators, its own server
// certificate): only profiles whose name starts with ProfilePrefix may
// issue them. Every other profile refuses them at issuance, and a pattern
// that names them outright is a config error.
type Reserved struct {
	// SPIFFEPath: SPIFFE IDs at or below this path ("/mica") of the trust
	// domain are reserved.
	SPIFFEPath string
	// Names are reserved DNS names and IP addresses (the server's names).
	Names []identity.Name
	// ProfilePrefix marks the profiles that may issue reserved names.
	ProfilePrefix string
}

// ProfileConfig says who may obtain which identities, for how long, with
// which keys and usages.
type ProfileConfig struct {
	// SPIFFE lists SPIFFE ID path globs under the trust domain. A segment
	// "*" matches exactly one path segment; a final "**" matches one or more.
	// Everything else is compared byte for byte (case-sensitive, no
	// percent-decoding), as the SPIFFE ID specification compares paths.
	SPIFFE []string `yaml:"spiffe,omitempty"`
	// DNS lists allowed DNS names. A label "*" matches exactly one label.
	// A pattern never by itself allows a wildcard certificate: that takes
	// AllowWildcards.
	DNS []string `yaml:"dns,omitempty"`
	// IPs lists the CIDRs (or single addresses) IP SANs must fall in.
	IPs []string `yaml:"ips,omitempty"`
	// DefaultTTL is the lifetime given when a request asks for none;
	// MaxTTL when unset.
	DefaultTTL duration.Duration `yaml:"default_ttl,omitempty"`
	// MaxTTL caps the lifetime; 24h when unset.
	MaxTTL duration.Duration `yaml:"max_ttl,omitempty"`
	// KeyTypes lists allowed subject key types: ecdsa-p256, ecdsa-p384,
	// ecdsa-p521, ed25519, rsa. Default: ecdsa-p256, ecdsa-p384, ed25519.
	KeyTypes []string `yaml:"key_types,omitempty"`
	// MinRSABits is the smallest RSA modulus allowed; 2048 when unset and
	// never less.
	MinRSABits int `yaml:"min_rsa_bits,omitempty"`
	// ExtKeyUsage lists clientAuth and/or serverAuth; both when unset.
	ExtKeyUsage []string `yaml:"ext_key_usage,omitempty"`
	// AllowWildcards permits DNS names like "*.svc.example.internal"
	// (which must still match a pattern).
	AllowWildcards bool `yaml:"allow_wildcards,omitempty"`
	// Networks, when set, lists the CIDRs a request must come from.
	Networks []string `yaml:"networks,omitempty"`
	// ExpectedNetworks, when set, lists the CIDRs requests normally come
	// from. Unlike Networks it refuses nothing by itself: a request from
	// elsewhere is decided as usual and flagged (Decision.UnexpectedSource)
	// so that the anomaly detector can alert on it, or refuse it where the
	// config's anomalies section says so.
	ExpectedNetworks []string `yaml:"expected_networks,omitempty"`
	// MaxRenewalChain, when set, caps how long a certificate may be renewed
	// from the token (or ACME order) that first enrolled it: past it, a
	// renewal is refused and a new token is needed.
	MaxRenewalChain duration.Duration `yaml:"max_renewal_chain,omitempty"`
	// Rule is an optional CEL expression over `request` that must be true.
	Rule string `yaml:"rule,omitempty"`
}

// Defaults applied to a profile that leaves a field unset.
const (
	DefaultMaxTTL = 24 * time.Hour
	MinRSABits    = 2048 // the floor: no profile may go below it
	MaxRSABits    = 8192 // the ceiling: larger moduli only cost every verifier time
	// MinTTL is the shortest lifetime anyone may ask for: X.509 times have
	// a resolution of one second.
	MinTTL = time.Second
)

// LoadConfig reads a policy config from YAML. Unknown fields are errors, so
// a misspelt field fails loudly instead of silently meaning its default.
// LoadConfig only parses; [New] (or [Config.Validate]) checks the content.
func LoadConfig(data []byte) (Config, error) {
	var c Config
	if err := strictyaml.Decode(data, &c); err != nil {
		return Config{}, fmt.Errorf("policy: reading config: %w", err)
	}
	return c, nil
}

// Validate reports every problem in the config at once, each naming the
// profile and field and saying how to fix it. It compiles the CEL rules
// too, so a config that validates is one [New] accepts.
func (c Config) Validate() error {
	_, err := compile(c)
	return err
}
