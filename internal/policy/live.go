package policy

import (
	"sync/atomic"

	"github.com/mica-pki/mica/identity"
)

// Live is the policy of a running server: one Engine at a time, replaced
// whole by Swap when the config is reloaded. Every Decide or CheckIdentity
// call runs on a single Engine — the one current when it starts — so a
// request never sees half of an old policy and half of a new one, and
// requests in flight finish on the policy they began with. Safe for
// concurrent use.
type Live struct {
	e atomic.Pointer[Engine]
}

// NewLive starts a Live policy with e.
func NewLive(e *Engine) *Live {
	l := &Live{}
	l.e.Store(e)
	return l
}

// Engine is the current policy.
func (l *Live) Engine() *Engine { return l.e.Load() }

// Swap makes e the policy of every later call and returns the previous one.
func (l *Live) Swap(e *Engine) *Engine { return l.e.Swap(e) }

// Decide decides req with the current policy.
func (l *Live) Decide(req Request) (Decision, error) { return l.e.Load().Decide(req) }

// CheckIdentity asks the current policy whether profile would allow id.
func (l *Live) CheckIdentity(profile string, id identity.Identity) error {
	return l.e.Load().CheckIdentity(profile, id)
}
