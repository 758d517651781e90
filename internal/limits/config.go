package limits

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/ratelimit"
)

// Limits is the `limits` section of mica.yaml: token buckets per identity,
// per requester and per source, server-wide with per-profile overrides.
// A field left out means its default; `rate: off` means no limit.
type Limits struct {
	ProfileLimits `yaml:",inline"`
	// MaxKeys bounds how many identities, requesters or sources each limit
	// tracks at once (default 100000). Beyond it the least recently seen
	// are forgotten, so no traffic pattern can exhaust memory.
	MaxKeys int `yaml:"max_keys"`
	// Profiles override the server-wide limits for one profile each.
	Profiles map[string]ProfileLimits `yaml:"profiles"`
}

// ProfileLimits are the three limits; unset ones inherit.
type ProfileLimits struct {
	PerIdentity  *Bucket `yaml:"per_identity"`
	PerRequester *Bucket `yaml:"per_requester"`
	PerSource    *Bucket `yaml:"per_source"`
}

// Bucket is one limit: a rate like "10/h" (events/period, or "off") and the
// burst a quiet key may spend at once (default: the rate's event count).
type Bucket struct {
	Rate  string `yaml:"rate"`
	Burst int    `yaml:"burst"`
}

// Anomalies is the `anomalies` section of mica.yaml: what the detector
// looks for and, per kind, whether it only alerts (metric and audit event)
// or also refuses. Unexpected issuers at authentication have no section:
// authentication refuses them anyway, and they are always reported.
type Anomalies struct {
	ProfileAnomalies `yaml:",inline"`
	Profiles         map[string]ProfileAnomalies `yaml:"profiles"`
}

// ProfileAnomalies are the detectors' settings; unset ones inherit.
type ProfileAnomalies struct {
	RenewalStorm      *RenewalStorm      `yaml:"renewal_storm"`
	IssuanceBurst     *IssuanceBurst     `yaml:"issuance_burst"`
	UnexpectedNetwork *UnexpectedNetwork `yaml:"unexpected_network"`
}

// RenewalStorm flags an identity renewing more than MaxRenewals times
// within one lifetime of its certificate (agents renew at two thirds of
// it, so about 1.5 times).
type RenewalStorm struct {
	Action      string `yaml:"action"`
	MaxRenewals int    `yaml:"max_renewals_per_lifetime"`
}

// IssuanceBurst flags issuance in a profile, or by one requester in it,
// above a count per Window (a sliding window).
type IssuanceBurst struct {
	Action       string            `yaml:"action"`
	Window       duration.Duration `yaml:"window"`
	PerProfile   int               `yaml:"per_profile"`
	PerRequester int               `yaml:"per_requester"`
}

// UnexpectedNetwork flags a request from outside the profile's
// expected_networks (a profile setting; see the policy).
type UnexpectedNetwork struct {
	Action string `yaml:"action"`
}

// Action is what a detector does when it fires.
type Action string

const (
	ActionOff    Action = "off"    // not checked
	ActionAlert  Action = "alert"  // metric and audit event; the request goes on
	ActionRefuse Action = "refuse" // metric, audit event and a refusal
)

// Defaults. They never bother an agent renewing at two thirds of a
// lifetime of five minutes or more, and stop a loop on one identity after
// ten quick requests.
var (
	DefaultPerIdentity = ratelimit.Limit{Rate: ratelimit.Rate{Events: 60, Per: time.Hour}, Burst: 10}
	// Requester and source limits are off by default: one automation
	// enrolling a fleet, or many hosts behind one NAT, are normal. Set
	// them to the shape of your fleet.
	DefaultPerRequester = ratelimit.Limit{}
	DefaultPerSource    = ratelimit.Limit{}
)

const (
	DefaultMaxKeys           = 100_000
	DefaultMaxRenewals       = 4
	DefaultBurstWindow       = time.Minute
	DefaultBurstPerProfile   = 1000
	DefaultBurstPerRequester = 300

	maxMaxKeys     = 10_000_000
	maxMaxRenewals = 1000
)

// Rules are the compiled settings: one set per profile.
type Rules struct {
	maxKeys  int
	def      *profileRules
	profiles map[string]*profileRules // only profiles with overrides
	known    map[string]bool          // every profile, for bounded metric labels
}

type profileRules struct {
	name                        string // the profile, or "" for the server-wide rules
	identity, requester, source ratelimit.Limit
	storm                       Action
	maxRenewals                 int
	burst                       Action
	burstWindow                 time.Duration
	burstPerProfile             int
	burstPerRequester           int
	network                     Action
}

// Compile checks both sections against the profiles the config defines
// and returns the rules. The error lists every problem, each naming its
// field (limits.profiles.web.per_source.rate) and how to fix it.
func Compile(l Limits, a Anomalies, profiles []string) (*Rules, error) {
	c := &compiler{}
	r := &Rules{maxKeys: l.MaxKeys, profiles: map[string]*profileRules{}, known: map[string]bool{}}
	switch {
	case l.MaxKeys == 0:
		r.maxKeys = DefaultMaxKeys
	case l.MaxKeys < 0 || l.MaxKeys > maxMaxKeys:
		c.fail("limits.max_keys", "%d is out of range: choose 1 to %d (default %d)", l.MaxKeys, maxMaxKeys, DefaultMaxKeys)
	}
	for _, p := range profiles {
		r.known[p] = true
	}
	base := &profileRules{
		identity: DefaultPerIdentity, requester: DefaultPerRequester, source: DefaultPerSource,
		storm: ActionAlert, maxRenewals: DefaultMaxRenewals,
		burst: ActionAlert, burstWindow: DefaultBurstWindow, burstPerProfile: DefaultBurstPerProfile, burstPerRequester: DefaultBurstPerRequester,
		network: ActionAlert,
	}
	r.def = c.apply(base, "limits", l.ProfileLimits, "anomalies", a.ProfileAnomalies)
	names := map[string]bool{}
	for name := range l.Profiles {
		names[name] = true
	}
	for name := range a.Profiles {
		names[name] = true
	}
	for _, name := range slices.Sorted(maps.Keys(names)) {
		if !r.known[name] {
			section := "limits"
			if _, ok := a.Profiles[name]; ok {
				section = "anomalies"
			}
			c.fail(section+".profiles."+name, "there is no profile %q: name one of %v", name, profiles)
			continue
		}
		pr := c.apply(r.def, "limits.profiles."+name, l.Profiles[name], "anomalies.profiles."+name, a.Profiles[name])
		pr.name = name
		r.profiles[name] = pr
	}
	if len(c.errs) > 0 {
		return nil, errors.Join(c.errs...)
	}
	return r, nil
}

type compiler struct{ errs []error }

func (c *compiler) fail(field, format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("limits: %s: %s", field, fmt.Sprintf(format, args...)))
}

// apply returns a copy of base with the set fields of l and a applied.
func (c *compiler) apply(base *profileRules, lpath string, l ProfileLimits, apath string, a ProfileAnomalies) *profileRules {
	r := *base
	c.bucket(&r.identity, lpath+".per_identity", l.PerIdentity)
	c.bucket(&r.requester, lpath+".per_requester", l.PerRequester)
	c.bucket(&r.source, lpath+".per_source", l.PerSource)
	if s := a.RenewalStorm; s != nil {
		c.action(&r.storm, apath+".renewal_storm.action", s.Action)
		c.count(&r.maxRenewals, apath+".renewal_storm.max_renewals_per_lifetime", s.MaxRenewals, maxMaxRenewals)
	}
	if b := a.IssuanceBurst; b != nil {
		c.action(&r.burst, apath+".issuance_burst.action", b.Action)
		switch {
		case b.Window.D() == 0:
		case b.Window.D() < time.Second || b.Window.D() > 24*time.Hour:
			c.fail(apath+".issuance_burst.window", "%s is out of range: choose 1s to 24h, like 1m", b.Window.D())
		default:
			r.burstWindow = b.Window.D()
		}
		c.count(&r.burstPerProfile, apath+".issuance_burst.per_profile", b.PerProfile, 1<<30)
		c.count(&r.burstPerRequester, apath+".issuance_burst.per_requester", b.PerRequester, 1<<30)
	}
	if n := a.UnexpectedNetwork; n != nil {
		c.action(&r.network, apath+".unexpected_network.action", n.Action)
	}
	return &r
}

func (c *compiler) bucket(dst *ratelimit.Limit, field string, b *Bucket) {
	if b == nil {
		return
	}
	if b.Rate == "" {
		c.fail(field+".rate", "missing: write events/period like 10/h, or off")
		return
	}
	rate, err := ratelimit.ParseRate(b.Rate)
	if err != nil {
		c.fail(field+".rate", "%v", err)
		return
	}
	burst := b.Burst
	switch {
	case burst < 0:
		c.fail(field+".burst", "%d is negative: give how many requests a quiet key may make at once, like 5", burst)
		return
	case rate.Unlimited() && burst != 0:
		c.fail(field+".burst", "a burst needs a rate: remove it, or give a rate like 10/h")
		return
	case burst == 0:
		burst = rate.Events
	}
	*dst = ratelimit.Limit{Rate: rate, Burst: burst}
}

func (c *compiler) action(dst *Action, field, s string) {
	switch a := Action(s); a {
	case "":
	case ActionOff, ActionAlert, ActionRefuse:
		*dst = a
	default:
		c.fail(field, "%q is not an action: use alert, refuse or off", s)
	}
}

func (c *compiler) count(dst *int, field string, n, limit int) {
	switch {
	case n == 0:
	case n < 0 || n > limit:
		c.fail(field, "%d is out of range: choose 1 to %d", n, limit)
	default:
		*dst = n
	}
}

// rules returns the rules for profile.
func (r *Rules) rules(profile string) *profileRules {
	if pr, ok := r.profiles[profile]; ok {
		return pr
	}
	return r.def
}

// label is profile as a metric label value: configured profiles by name,
// anything else as "unknown", so a label's values are bounded by the config.
func (r *Rules) label(profile string) string {
	if r.known[profile] {
		return profile
	}
	return unknownProfile
}

const unknownProfile = "unknown"
