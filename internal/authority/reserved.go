package authority

import (
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/policy"
)

// The reserved profiles and names: what mica issues for itself, and the
// names no other profile may ever issue (policy enforces that, from the
// policy.Reserved this file fills in).
const (
	// ReservedProfilePrefix marks profiles mica itself defines; a config
	// may not define one.
	ReservedProfilePrefix = "mica-"
	// ProfileAdmin is the profile of administrators' credentials: the only
	// certificates that can carry a role.
	ProfileAdmin = ReservedProfilePrefix + "admin"
	// ProfileServer is the profile of mica's own TLS server certificate.
	ProfileServer = ReservedProfilePrefix + "server"
	// ProfileOCSP is the profile of the OCSP responders' delegated
	// certificates, one per issuing CA, each signed by that CA.
	ProfileOCSP = ReservedProfilePrefix + "ocsp"
	// ReservedSPIFFEPath is mica's own SPIFFE namespace: IDs at or below it
	// are issued only under reserved profiles.
	ReservedSPIFFEPath = "/mica"
	// AdminPathPrefix is where administrators' SPIFFE IDs live.
	AdminPathPrefix = ReservedSPIFFEPath + "/admin/"
	// OCSPPathPrefix is where the OCSP responders' SPIFFE IDs live
	// (…/mica/ocsp/<issuer's subject key id, hex>).
	OCSPPathPrefix = ReservedSPIFFEPath + "/ocsp/"

	AdminCertTTL  = 30 * 24 * time.Hour
	ServerCertTTL = 7 * 24 * time.Hour
	OCSPCertTTL   = 7 * 24 * time.Hour
	// AdminMaxRenewalChain is how long an administrator's credential may be
	// renewed from the token that first enrolled it; then a new token is
	// needed, so a stolen admin credential does not live forever.
	AdminMaxRenewalChain = 30 * 24 * time.Hour
)

// IsReservedProfile reports whether a profile is one of mica's own.
func IsReservedProfile(name string) bool { return strings.HasPrefix(name, ReservedProfilePrefix) }

// WithReserved returns cfg with mica's reserved profiles added and its
// reserved names (the /mica SPIFFE namespace and the API's own server
// names) set, so that the policy engine issues those names only under the
// reserved profiles. A config that defines a reserved profile itself is
// refused.
func WithReserved(cfg policy.Config, serverNames []string) (policy.Config, error) {
	for p := range cfg.Profiles {
		if IsReservedProfile(p) {
			return cfg, fmt.Errorf("authority: profile %q: names starting with %q are reserved for mica itself; rename it", p, ReservedProfilePrefix)
		}
	}
	names := make([]identity.Name, 0, len(serverNames))
	server := policy.ProfileConfig{
		DefaultTTL:  duration.Duration(ServerCertTTL),
		MaxTTL:      duration.Duration(ServerCertTTL),
		ExtKeyUsage: []string{"serverAuth"},
		Rule:        `request.method == "internal"`,
	}
	for _, s := range serverNames {
		n, err := identity.ParseName(s)
		if err != nil || n.Kind() == identity.KindSPIFFE {
			return cfg, fmt.Errorf("authority: server name %q is not a DNS name or IP address: %v", s, err)
		}
		names = append(names, n)
		if n.Kind() == identity.KindIP {
			server.IPs = append(server.IPs, n.String())
		} else {
			server.DNS = append(server.DNS, n.String())
		}
	}
	out := cfg
	out.Profiles = make(map[string]policy.ProfileConfig, len(cfg.Profiles)+2)
	for k, v := range cfg.Profiles {
		out.Profiles[k] = v
	}
	out.Profiles[ProfileAdmin] = policy.ProfileConfig{
		SPIFFE:          []string{AdminPathPrefix + "*"},
		DefaultTTL:      duration.Duration(AdminCertTTL),
		MaxTTL:          duration.Duration(3 * AdminCertTTL),
		ExtKeyUsage:     []string{"clientAuth"},
		MaxRenewalChain: duration.Duration(AdminMaxRenewalChain),
		Rule:            `request.method in ["internal", "token", "renew"]`,
	}
	if len(server.DNS)+len(server.IPs) > 0 {
		out.Profiles[ProfileServer] = server
	}
	out.Profiles[ProfileOCSP] = policy.ProfileConfig{
		SPIFFE:      []string{OCSPPathPrefix + "*"},
		DefaultTTL:  duration.Duration(OCSPCertTTL),
		MaxTTL:      duration.Duration(OCSPCertTTL),
		ExtKeyUsage: []string{"ocspSigning"},
		Rule:        `request.method == "internal"`,
	}
	out.Reserved = policy.Reserved{SPIFFEPath: ReservedSPIFFEPath, Names: names, ProfilePrefix: ReservedProfilePrefix}
	return out, nil
}

// ParseAdmins reads the config's admins section (SPIFFE ID → role). Every
// entry must be a SPIFFE ID of the trust domain under AdminPathPrefix, the
// only names the admin profile issues: any other entry could never hold a
// role and is a mistake worth refusing.
func ParseAdmins(admins map[string]string, trustDomain string) (map[string]Role, error) {
	out := make(map[string]Role, len(admins))
	for s, r := range admins {
		role, err := ParseRole(r)
		if err != nil {
			return nil, fmt.Errorf("authority: admins: %s: %w", s, err)
		}
		id, err := spiffeid.FromString(s)
		if err != nil || id.TrustDomain().Name() != trustDomain || !strings.HasPrefix(id.Path(), AdminPathPrefix) ||
			strings.Contains(strings.TrimPrefix(id.Path(), AdminPathPrefix), "/") {
			return nil, fmt.Errorf("authority: admins: %q is not an administrator's SPIFFE ID: write it like spiffe://%s%salice", s, trustDomain, AdminPathPrefix)
		}
		out[id.String()] = role
	}
	return out, nil
}
