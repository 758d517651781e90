package policy

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"cel.dev/cel-go/cel"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/duration"
)

// Engine decides requests against a compiled config. It is immutable once
// built and safe for concurrent use.
type Engine struct {
	profiles map[string]*profile
	names    []string // sorted, for messages and listings
}

// profile is a ProfileConfig compiled for matching.
type profile struct {
	info       ProfileInfo
	td         spiffeid.TrustDomain
	spiffe     []spiffeGlob
	dns        []dnsPattern
	ips        []netip.Prefix
	networks   []netip.Prefix
	expected   []netip.Prefix
	keyTypes   []string
	minRSABits int
	eku        []x509.ExtKeyUsage
	rule       cel.Program // nil when the profile has no rule
	// reserved is the config's reserved names; mayReserve says this
	// profile is one of mica's own and may issue them.
	reserved   *Reserved
	mayReserve bool
}

// ProfileInfo is a profile as the engine applies it, defaults filled in,
// for printing what a profile allows.
type ProfileInfo struct {
	Name           string
	SPIFFE         []string // full SPIFFE ID globs, like spiffe://example.org/billing/*
	DNS            []string
	IPs            []string
	DefaultTTL     time.Duration
	MaxTTL         time.Duration
	KeyTypes       []string
	MinRSABits     int
	ExtKeyUsage    []string // clientAuth, serverAuth
	AllowWildcards bool
	Networks       []string
	// ExpectedNetworks are where requests normally come from (see
	// ProfileConfig.ExpectedNetworks).
	ExpectedNetworks []string
	Rule             string
	// MaxRenewalChain caps a renewal chain's age (0: no cap).
	MaxRenewalChain time.Duration
	// CoversReserved lists reserved names that a pattern of this profile
	// would cover; the profile refuses them at issuance all the same.
	CoversReserved []string
}

// New validates cfg and compiles its globs, CIDRs and CEL rules once, so
// that Decide does no parsing. The error lists every problem in the config.
func New(cfg Config) (*Engine, error) {
	return compile(cfg)
}

var profileNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

var ekuByName = map[string]x509.ExtKeyUsage{
	"clientAuth": x509.ExtKeyUsageClientAuth,
	"serverAuth": x509.ExtKeyUsageServerAuth,
	// ocspSigning is only for mica's own OCSP responders (reserved
	// profiles); compile refuses it anywhere else.
	"ocspSigning": x509.ExtKeyUsageOCSPSigning,
}

func compile(cfg Config) (*Engine, error) {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("policy: "+format, args...))
	}
	var td spiffeid.TrustDomain
	if cfg.TrustDomain != "" {
		var err error
		if td, err = spiffeid.TrustDomainFromString(cfg.TrustDomain); err != nil {
			fail("trust_domain %q is not a valid SPIFFE trust domain (%v): use lower-case letters, digits, '.', '-' and '_', like example.org", cfg.TrustDomain, err)
		}
	}
	if len(cfg.Profiles) == 0 {
		fail("the config has no profiles: add at least one under profiles:")
	}
	env, err := newRuleEnv()
	if err != nil {
		// Only a bug here could cause this; say so rather than blame the config.
		return nil, fmt.Errorf("policy: building the CEL environment: %w", err)
	}
	e := &Engine{profiles: make(map[string]*profile, len(cfg.Profiles))}
	for name := range cfg.Profiles {
		e.names = append(e.names, name)
	}
	sort.Strings(e.names)
	for _, name := range e.names {
		p, perrs := compileProfile(name, cfg.Profiles[name], td, cfg.TrustDomain != "", env)
		p.reserved = &cfg.Reserved
		p.mayReserve = cfg.Reserved.ProfilePrefix != "" && strings.HasPrefix(name, cfg.Reserved.ProfilePrefix)
		if !p.mayReserve {
			perrs = append(perrs, p.checkReservedPatterns()...)
			if slices.Contains(p.eku, x509.ExtKeyUsageOCSPSigning) {
				perrs = append(perrs, fmt.Errorf("policy: profile %q: ext_key_usage: ocspSigning is only for mica's own OCSP responders: use clientAuth and/or serverAuth", name))
			}
		}
		errs = append(errs, perrs...)
		e.profiles[name] = p
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return e, nil
}

func compileProfile(name string, pc ProfileConfig, td spiffeid.TrustDomain, haveTD bool, env *cel.Env) (*profile, []error) {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("policy: profile %q: %s: %s", name, field, fmt.Sprintf(format, args...)))
	}
	if !profileNameRE.MatchString(name) {
		fail("name", "use 1-63 lower-case letters, digits, '-' and '_', starting with a letter or digit")
	}
	p := &profile{td: td, info: ProfileInfo{Name: name, AllowWildcards: pc.AllowWildcards, Rule: pc.Rule,
		MaxRenewalChain: pc.MaxRenewalChain.D()}}
	if pc.MaxRenewalChain < 0 {
		fail("max_renewal_chain", "%s is negative: give a span like 30d, or remove it for no cap", pc.MaxRenewalChain)
	}

	if len(pc.SPIFFE) > 0 && !haveTD {
		fail("spiffe", "the profile allows SPIFFE IDs but the config has no trust_domain: set trust_domain at the top level, like trust_domain: example.org")
	}
	for _, s := range pc.SPIFFE {
		g, err := parseSPIFFEGlob(s)
		if err != nil {
			fail("spiffe", "%q: %v", s, err)
			continue
		}
		p.spiffe = append(p.spiffe, g)
		p.info.SPIFFE = append(p.info.SPIFFE, "spiffe://"+td.Name()+s)
	}
	for _, s := range pc.DNS {
		d, err := parseDNSPattern(s)
		if err != nil {
			fail("dns", "%q: %v", s, err)
			continue
		}
		p.dns = append(p.dns, d)
		p.info.DNS = append(p.info.DNS, strings.Join(d.labels, "."))
	}
	for _, s := range pc.IPs {
		pr, err := parsePrefix(s)
		if err != nil {
			fail("ips", "%v", err)
			continue
		}
		p.ips = append(p.ips, pr)
		p.info.IPs = append(p.info.IPs, pr.String())
	}
	if len(pc.SPIFFE)+len(pc.DNS)+len(pc.IPs) == 0 {
		fail("spiffe, dns, ips", "the profile allows no identity: list at least one SPIFFE ID glob, DNS name or IP range")
	}
	for _, s := range pc.Networks {
		pr, err := parsePrefix(s)
		if err != nil {
			fail("networks", "%v", err)
			continue
		}
		p.networks = append(p.networks, pr)
		p.info.Networks = append(p.info.Networks, pr.String())
	}
	for _, s := range pc.ExpectedNetworks {
		pr, err := parsePrefix(s)
		if err != nil {
			fail("expected_networks", "%v", err)
			continue
		}
		p.expected = append(p.expected, pr)
		p.info.ExpectedNetworks = append(p.info.ExpectedNetworks, pr.String())
	}

	maxTTL, defaultTTL := pc.MaxTTL.D(), pc.DefaultTTL.D()
	p.info.MaxTTL = maxTTL
	switch {
	case maxTTL < 0:
		fail("max_ttl", "%s is negative: give a lifetime like 24h, or remove it for the default %s", maxTTL, duration.Format(DefaultMaxTTL))
	case maxTTL == 0:
		p.info.MaxTTL = DefaultMaxTTL
	case maxTTL < time.Second:
		fail("max_ttl", "%s is shorter than a second: write durations with a unit, like 24h", maxTTL)
	}
	p.info.DefaultTTL = defaultTTL
	switch {
	case defaultTTL < 0:
		fail("default_ttl", "%s is negative: give a lifetime like 1h, or remove it to default to max_ttl", defaultTTL)
	case defaultTTL == 0:
		p.info.DefaultTTL = p.info.MaxTTL
	case defaultTTL > p.info.MaxTTL && p.info.MaxTTL > 0:
		fail("default_ttl", "%s is longer than max_ttl %s: lower default_ttl or raise max_ttl", duration.Format(defaultTTL), duration.Format(p.info.MaxTTL))
	}

	keyTypes := pc.KeyTypes
	if len(keyTypes) == 0 {
		keyTypes = defaultKeyTypes
	}
	for _, k := range keyTypes {
		switch {
		case slices.Contains(p.keyTypes, k):
			fail("key_types", "%q is listed twice: list it once", k)
		case slices.Contains(knownKeyTypes, k):
			p.keyTypes = append(p.keyTypes, k)
		case strings.HasPrefix(k, KeyRSA+"-"):
			fail("key_types", "%q: write rsa and set the smallest size with min_rsa_bits, like min_rsa_bits: 3072", k)
		default:
			fail("key_types", "%q is not a key type: use %s", k, strings.Join(knownKeyTypes, ", "))
		}
	}
	p.info.KeyTypes = slices.Clone(p.keyTypes)
	p.minRSABits = pc.MinRSABits
	switch {
	case pc.MinRSABits == 0:
		p.minRSABits = MinRSABits
	case pc.MinRSABits < MinRSABits:
		fail("min_rsa_bits", "%d is below the floor of %d: set %d or more, or remove it", pc.MinRSABits, MinRSABits, MinRSABits)
	case !slices.Contains(p.keyTypes, KeyRSA):
		fail("min_rsa_bits", "is set but key_types does not allow rsa: add rsa to key_types or remove min_rsa_bits")
	}
	if slices.Contains(p.keyTypes, KeyRSA) {
		p.info.MinRSABits = p.minRSABits
	}

	ekus := pc.ExtKeyUsage
	if len(ekus) == 0 {
		ekus = []string{"clientAuth", "serverAuth"}
	}
	for _, u := range ekus {
		v, ok := ekuByName[u]
		switch {
		case !ok:
			fail("ext_key_usage", "%q is not supported: mica issues mTLS certificates, so use clientAuth and/or serverAuth", u)
		case slices.Contains(p.eku, v):
			fail("ext_key_usage", "%q is listed twice: list it once", u)
		default:
			p.eku = append(p.eku, v)
			p.info.ExtKeyUsage = append(p.info.ExtKeyUsage, u)
		}
	}

	if strings.TrimSpace(pc.Rule) != "" {
		prg, err := compileRule(env, pc.Rule)
		if err != nil {
			fail("rule", "%v", err)
		}
		p.rule = prg
	}
	return p, errs
}

// Profiles lists the profile names, sorted.
func (e *Engine) Profiles() []string { return slices.Clone(e.names) }

// Profile describes one profile as the engine applies it.
func (e *Engine) Profile(name string) (ProfileInfo, bool) {
	p, ok := e.profiles[name]
	if !ok {
		return ProfileInfo{}, false
	}
	info := p.info
	info.SPIFFE = slices.Clone(info.SPIFFE)
	info.DNS = slices.Clone(info.DNS)
	info.IPs = slices.Clone(info.IPs)
	info.KeyTypes = slices.Clone(info.KeyTypes)
	info.ExtKeyUsage = slices.Clone(info.ExtKeyUsage)
	info.Networks = slices.Clone(info.Networks)
	info.ExpectedNetworks = slices.Clone(info.ExpectedNetworks)
	info.CoversReserved = slices.Clone(info.CoversReserved)
	return info, true
}

// Decide checks a request against its profile and returns what may be
// issued: the identity (DNS names lower-cased, IPv4-mapped addresses
// unmapped), the TTL with defaults applied, and the profile's key usages.
// A refusal is a *DeniedError whose Reason says which check failed; checks
// run in a fixed order (profile, identity, wildcard, names, TTL, key,
// source, rule) so the same request always gets the same reason.
func (e *Engine) Decide(req Request) (Decision, error) {
	p, err := e.profile(req.Profile)
	if err != nil {
		return Decision{}, err
	}
	id, err := p.checkIdentity(req.Identity)
	if err != nil {
		return Decision{}, err
	}
	ttl, err := p.checkTTL(req.TTL)
	if err != nil {
		return Decision{}, err
	}
	if err := p.checkRenewalChain(req); err != nil {
		return Decision{}, err
	}
	key, err := p.checkKey(req)
	if err != nil {
		return Decision{}, err
	}
	if err := p.checkSource(req.Source); err != nil {
		return Decision{}, err
	}
	if p.rule != nil {
		if err := p.checkRule(req, id, ttl, key); err != nil {
			return Decision{}, err
		}
	}
	return Decision{Profile: p.info.Name, Identity: id, TTL: ttl, ExtKeyUsage: slices.Clone(p.eku),
		UnexpectedSource: p.unexpectedSource(req.Source)}, nil
}

// CheckIdentity reports whether a profile would allow an identity, ignoring
// everything else about a request, so that a token bound to an identity
// the profile can never issue is refused when it is made.
func (e *Engine) CheckIdentity(profileName string, id identity.Identity) error {
	p, err := e.profile(profileName)
	if err != nil {
		return err
	}
	_, err = p.checkIdentity(id)
	return err
}

func (e *Engine) profile(name string) (*profile, error) {
	if p, ok := e.profiles[name]; ok {
		return p, nil
	}
	have := strings.Join(e.names, ", ")
	if name == "" {
		return nil, &DeniedError{Reason: ReasonUnknownProfile,
			Detail: fmt.Sprintf("the request names no profile: ask for one of %s", have)}
	}
	return nil, &DeniedError{Profile: name, Reason: ReasonUnknownProfile,
		Detail: fmt.Sprintf("profile %q does not exist (profiles: %s): ask for one of those, or add it to the policy config", name, have)}
}

func (p *profile) deny(r Reason, format string, args ...any) *DeniedError {
	return &DeniedError{Profile: p.info.Name, Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// checkIdentity validates and normalizes an identity, then matches every
// name in it: a certificate is only as narrow as its widest name.
func (p *profile) checkIdentity(in identity.Identity) (identity.Identity, error) {
	if in.IsZero() {
		return identity.Identity{}, p.deny(ReasonInvalidIdentity, "the request names no identity: ask for a SPIFFE ID, DNS name or IP address")
	}
	out := identity.Identity{SPIFFE: in.SPIFFE}
	if len(in.DNS) > 0 {
		out.DNS = make([]string, 0, len(in.DNS))
	}
	for _, name := range in.DNS {
		n, err := identity.NormalizeDNS(name)
		if err != nil {
			return identity.Identity{}, p.deny(ReasonInvalidIdentity, "%s", strings.TrimPrefix(err.Error(), "identity: "))
		}
		if slices.Contains(out.DNS, n) {
			return identity.Identity{}, p.deny(ReasonInvalidIdentity, "DNS name %s is listed twice: list each name once", n)
		}
		out.DNS = append(out.DNS, n)
	}
	if len(in.IPs) > 0 {
		out.IPs = make([]netip.Addr, 0, len(in.IPs))
	}
	for _, ip := range in.IPs {
		a := ip.Unmap()
		switch {
		case !a.IsValid():
			return identity.Identity{}, p.deny(ReasonInvalidIdentity, "an IP address in the request is empty: remove it")
		case a.Zone() != "":
			return identity.Identity{}, p.deny(ReasonInvalidIdentity, "IP address %s has a zone, which a certificate cannot carry: remove %%%s", a, a.Zone())
		case slices.Contains(out.IPs, a):
			return identity.Identity{}, p.deny(ReasonInvalidIdentity, "IP address %s is listed twice: list each address once", a)
		}
		out.IPs = append(out.IPs, a)
	}

	if err := p.checkReserved(out); err != nil {
		return identity.Identity{}, err
	}
	// Wildcards first: a wildcard name that also fails a pattern is refused
	// for being a wildcard, which is the fix the requester needs.
	if !p.info.AllowWildcards {
		for _, n := range out.DNS {
			if strings.HasPrefix(n, "*.") {
				return identity.Identity{}, p.deny(ReasonWildcard,
					"wildcard DNS name %s is not allowed by profile %q: ask for the exact names (a profile allows wildcards only with allow_wildcards: true)", n, p.info.Name)
			}
		}
	}
	if !out.SPIFFE.IsZero() {
		if err := p.checkSPIFFE(out.SPIFFE); err != nil {
			return identity.Identity{}, err
		}
	}
	for _, n := range out.DNS {
		if !p.matchDNS(n) {
			return identity.Identity{}, p.deny(ReasonIdentityNotAllowed,
				"DNS name %s is not allowed by profile %q (allowed: %s)", n, p.info.Name, allowedList(p.info.DNS, "no DNS names"))
		}
	}
	for _, a := range out.IPs {
		if !containsAddr(p.ips, a) {
			return identity.Identity{}, p.deny(ReasonIdentityNotAllowed,
				"IP address %s is not allowed by profile %q (allowed: %s)", a, p.info.Name, allowedList(p.info.IPs, "no IP addresses"))
		}
	}
	return out, nil
}

func (p *profile) checkSPIFFE(id spiffeid.ID) error {
	allowed := allowedList(p.info.SPIFFE, "no SPIFFE IDs")
	if len(p.spiffe) == 0 || id.TrustDomain() != p.td {
		return p.deny(ReasonIdentityNotAllowed, "identity %s is not allowed by profile %q (allowed: %s)", id, p.info.Name, allowed)
	}
	path := id.Path()
	for i := range p.spiffe {
		if p.spiffe[i].match(path) {
			return nil
		}
	}
	return p.deny(ReasonIdentityNotAllowed, "identity %s is not allowed by profile %q (allowed: %s)", id, p.info.Name, allowed)
}

func (p *profile) matchDNS(name string) bool {
	for i := range p.dns {
		if p.dns[i].match(name) {
			return true
		}
	}
	return false
}

func (p *profile) checkTTL(ttl time.Duration) (time.Duration, error) {
	switch {
	case ttl < 0:
		return 0, p.deny(ReasonInvalidRequest, "ttl %s is negative: ask for a positive lifetime, or none for the profile's default %s", ttl, duration.Format(p.info.DefaultTTL))
	case ttl == 0:
		return p.info.DefaultTTL, nil
	case ttl < MinTTL:
		return 0, p.deny(ReasonInvalidRequest, "ttl %s is under %s: certificate times are whole seconds, so ask for %s or more", ttl, MinTTL, MinTTL)
	case ttl > p.info.MaxTTL:
		return 0, p.deny(ReasonTTLTooLong, "ttl %s is longer than profile %q allows (max_ttl: %s): ask for %s or less",
			duration.Format(ttl), p.info.Name, duration.Format(p.info.MaxTTL), duration.Format(p.info.MaxTTL))
	}
	return ttl, nil
}

func (p *profile) checkKey(req Request) (keyInfo, error) {
	k, err := classifyKey(req.PublicKey)
	if err != nil {
		return keyInfo{}, p.deny(ReasonKeyNotAllowed, "%v (profile %q allows: %s)", err, p.info.Name, p.allowedKeys())
	}
	if k.typ == KeyRSA && (k.bits > MaxRSABits || k.bits%8 != 0) {
		return keyInfo{}, p.deny(ReasonKeyNotAllowed, "key %s is not certified: use RSA of %d to %d bits in whole octets, or an ECDSA key (profile %q allows: %s)",
			k, p.minRSABits, MaxRSABits, p.info.Name, p.allowedKeys())
	}
	if !slices.Contains(p.keyTypes, k.typ) || (k.typ == KeyRSA && k.bits < p.minRSABits) {
		return keyInfo{}, p.deny(ReasonKeyNotAllowed, "key %s is not allowed by profile %q (allowed: %s)", k, p.info.Name, p.allowedKeys())
	}
	return k, nil
}

func (p *profile) allowedKeys() string {
	out := make([]string, len(p.keyTypes))
	for i, k := range p.keyTypes {
		out[i] = k
		if k == KeyRSA {
			out[i] = "rsa of " + strconv.Itoa(p.minRSABits) + " bits or more"
		}
	}
	return strings.Join(out, ", ")
}

func (p *profile) checkSource(src netip.Addr) error {
	if len(p.networks) == 0 {
		return nil
	}
	nets := strings.Join(p.info.Networks, ", ")
	if !src.IsValid() {
		// Not knowing where a request came from is no reason to trust it.
		return p.deny(ReasonSourceNotAllowed, "the request's source address is unknown but profile %q only allows requests from %s", p.info.Name, nets)
	}
	if !containsAddr(p.networks, src) {
		return p.deny(ReasonSourceNotAllowed, "source address %s is not allowed by profile %q (allowed networks: %s)", src.Unmap(), p.info.Name, nets)
	}
	return nil
}

// unexpectedSource reports a source outside the profile's expected
// networks. An unknown source is unexpected too, as checkSource treats it.
func (p *profile) unexpectedSource(src netip.Addr) bool {
	return len(p.expected) > 0 && (!src.IsValid() || !containsAddr(p.expected, src))
}

func (p *profile) checkRule(req Request, id identity.Identity, ttl time.Duration, key keyInfo) error {
	in := &RuleRequest{
		Profile:    p.info.Name,
		DNS:        id.DNS,
		TTLSeconds: int64(ttl / time.Second),
		KeyType:    key.typ,
		KeyBits:    int64(key.bits),
		Method:     string(req.Method),
		Requester:  req.Requester,
	}
	if in.DNS == nil {
		in.DNS = []string{} // a rule may call request.dns.size(); keep it a list
	}
	if !id.SPIFFE.IsZero() {
		in.SPIFFEID = id.SPIFFE.String()
	}
	in.IPs = make([]string, len(id.IPs))
	for i, a := range id.IPs {
		in.IPs[i] = a.String()
	}
	if req.Source.IsValid() {
		in.Source = req.Source.Unmap().String()
	}
	ok, err := evalRule(p.rule, in)
	switch {
	case err != nil:
		return p.deny(ReasonRuleDenied, "the rule of profile %q could not be evaluated, so the request is refused: %v", p.info.Name, err)
	case !ok:
		return p.deny(ReasonRuleDenied, "the rule of profile %q refused the request (rule: %s)", p.info.Name, shorten(p.info.Rule, 200))
	}
	return nil
}

func allowedList(items []string, none string) string {
	if len(items) == 0 {
		return none
	}
	return strings.Join(items, ", ")
}

// shorten keeps a rule quoted in an error to one readable line.
func shorten(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
