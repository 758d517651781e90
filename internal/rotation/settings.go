package rotation

import (
	"fmt"
	"time"

	"github.com/mica-pki/mica/internal/ca"
	"github.com/mica-pki/mica/internal/duration"
)

// Settings is mica.yaml's ca section:
//
//	ca:
//	  intermediate_lifetime: 365d   # each new intermediate
//	  root_lifetime: 3650d          # each new root
//	  prepare_at: 0.5               # successor prepared at half the active one's life
//	  propagation: 24h              # published this long before it signs; default: the longest max_ttl
//	  root_rollover: manual         # or auto (needs the root key online)
//	  rotation: auto                # manual: only `mica ca rotate` prepares and activates
//	  poll: 10s                     # how often servers read the slots again
type Settings struct {
	IntermediateLifetime duration.Duration `yaml:"intermediate_lifetime,omitempty"`
	RootLifetime         duration.Duration `yaml:"root_lifetime,omitempty"`
	PrepareAt            float64           `yaml:"prepare_at,omitempty"`
	Propagation          duration.Duration `yaml:"propagation,omitempty"`
	RootRollover         string            `yaml:"root_rollover,omitempty"`
	Rotation             string            `yaml:"rotation,omitempty"`
	Poll                 duration.Duration `yaml:"poll,omitempty"`
}

// Resolved is Settings with every default filled in.
type Resolved struct {
	Thresholds           Thresholds
	IntermediateLifetime time.Duration
	RootLifetime         time.Duration
	Poll                 time.Duration
}

// Resolve fills in the defaults and checks the settings against the
// longest lifetime a leaf may be given (the profiles' largest max_ttl):
// propagation is at least that by default, and an intermediate must live
// long enough that its successor is prepared, propagated and activated
// while the leaves it signs still fit in it.
func (s Settings) Resolve(maxLeafTTL time.Duration) (Resolved, error) {
	r := Resolved{
		Thresholds:           Thresholds{PrepareAt: s.PrepareAt, Propagation: s.Propagation.D()},
		IntermediateLifetime: s.IntermediateLifetime.D(),
		RootLifetime:         s.RootLifetime.D(),
		Poll:                 s.Poll.D(),
	}
	switch {
	case s.PrepareAt < 0 || s.PrepareAt >= 1:
		return r, fmt.Errorf("rotation: ca.prepare_at %g must be between 0 and 1 (a fraction of the active CA's life), e.g. 0.5", s.PrepareAt)
	case s.Propagation < 0 || s.IntermediateLifetime < 0 || s.RootLifetime < 0 || s.Poll < 0:
		return r, fmt.Errorf("rotation: the ca section's durations must not be negative")
	}
	switch s.RootRollover {
	case "", "manual":
	case "auto":
		r.Thresholds.AutoRoot = true
	default:
		return r, fmt.Errorf("rotation: ca.root_rollover %q: use manual or auto", s.RootRollover)
	}
	switch s.Rotation {
	case "", "auto":
	case "manual":
		r.Thresholds.Manual = true
	default:
		return r, fmt.Errorf("rotation: ca.rotation %q: use auto or manual", s.Rotation)
	}
	if r.Thresholds.PrepareAt == 0 {
		r.Thresholds.PrepareAt = defaultPrepareAt
	}
	if r.Thresholds.Propagation == 0 {
		r.Thresholds.Propagation = maxLeafTTL
	}
	if r.IntermediateLifetime == 0 {
		r.IntermediateLifetime = ca.DefaultIntermediateValidity
	}
	if r.RootLifetime == 0 {
		r.RootLifetime = ca.DefaultRootValidity
	}
	if r.Poll == 0 {
		r.Poll = 10 * time.Second
	}
	left := time.Duration(float64(r.IntermediateLifetime) * (1 - r.Thresholds.PrepareAt))
	if need := r.Thresholds.Propagation + maxLeafTTL; left < need {
		return r, fmt.Errorf("rotation: an intermediate of %s, succeeded at %g of its life, has %s left when its successor is prepared, "+
			"but propagation (%s) and the longest leaf (%s) need %s: lengthen ca.intermediate_lifetime, lower ca.prepare_at or shorten the profiles' max_ttl",
			duration.Format(r.IntermediateLifetime), r.Thresholds.PrepareAt, duration.Format(left), duration.Format(r.Thresholds.Propagation),
			duration.Format(maxLeafTTL), duration.Format(need))
	}
	if r.RootLifetime <= r.IntermediateLifetime {
		return r, fmt.Errorf("rotation: ca.root_lifetime (%s) must be longer than ca.intermediate_lifetime (%s)", duration.Format(r.RootLifetime), duration.Format(r.IntermediateLifetime))
	}
	return r, nil
}
