package rotation

import (
	"fmt"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// Thresholds are the named moments of a rotation.
type Thresholds struct {
	// PrepareAt is the fraction of the active CA's life after which its
	// successor is prepared; default 1/2.
	PrepareAt float64
	// Propagation is how long a prepared CA is published in the trust
	// bundle before it may activate: at least the longest leaf lifetime
	// (every holder renews, and fetches the bundle, within it) and longer
	// than the consumers' bundle polling.
	Propagation time.Duration
	// AutoRoot lets the root roll over on its own (with its key online);
	// otherwise only a forced step prepares a root.
	AutoRoot bool
	// Manual stops every automatic preparation and activation (ca.rotation:
	// manual): only forced steps rotate; removals still happen.
	Manual bool
}

const defaultPrepareAt = 0.5

func (t Thresholds) prepareAt() float64 {
	if t.PrepareAt <= 0 || t.PrepareAt >= 1 {
		return defaultPrepareAt
	}
	return t.PrepareAt
}

// Slot is a CA slot as the decision sees it.
type Slot struct {
	ID                                 int64
	Kind                               store.SlotKind
	State                              store.SlotState
	Parent                             int64
	NotBefore, NotAfter                time.Time
	PreparedAt, ActivatedAt, RetiredAt time.Time
	// KeyOnline says the slot's key can sign here (a root kept offline
	// cannot prepare anything).
	KeyOnline bool
	// IssuedUntil is when the last certificate it signed expires (for an
	// intermediate: its leaves; for a root: the intermediates left).
	IssuedUntil time.Time
}

// Action is what a Step does.
type Action string

const (
	Prepare  Action = "prepare"
	Activate Action = "activate"
	Remove   Action = "remove"
)

// Step is one due move of the state machine.
type Step struct {
	Action Action
	Kind   store.SlotKind
	// Slot is the slot activated or removed; 0 for Prepare.
	Slot int64
	// Why says which threshold made it due, for the audit event and logs.
	Why string
}

func (s Step) String() string {
	if s.Slot == 0 {
		return fmt.Sprintf("%s %s (%s)", s.Action, s.Kind, s.Why)
	}
	return fmt.Sprintf("%s %s %d (%s)", s.Action, s.Kind, s.Slot, s.Why)
}

// Next is the step due at now, if any: activations first (a prepared CA
// whose propagation is over; an intermediate only once its root is
// active), then preparations (an active CA past PrepareAt of its life, or
// an intermediate whose root rolled over; a new intermediate is signed by
// the newest root, so one prepared while a root propagates activates with
// it), then removals (a retired CA whose last certificate has expired).
// It is pure: the same slots and time give the same step on every server.
func Next(slots []Slot, now time.Time, th Thresholds) (Step, bool) {
	var active, prepared = map[store.SlotKind]*Slot{}, map[store.SlotKind]*Slot{}
	byID := map[int64]*Slot{}
	for i := range slots {
		s := &slots[i]
		byID[s.ID] = s
		switch s.State {
		case store.SlotActive:
			active[s.Kind] = s
		case store.SlotPrepared:
			prepared[s.Kind] = s
		}
	}
	for _, kind := range []store.SlotKind{store.SlotRoot, store.SlotIntermediate} {
		p := prepared[kind]
		if th.Manual || p == nil || now.Before(p.PreparedAt.Add(th.Propagation)) {
			continue
		}
		if parent := byID[p.Parent]; kind == store.SlotIntermediate && parent != nil && parent.State == store.SlotPrepared {
			continue // it activates with its root
		}
		return Step{Action: Activate, Kind: kind, Slot: p.ID, Why: fmt.Sprintf("published since %s, propagation %s is over", p.PreparedAt.UTC().Format(time.RFC3339), th.Propagation)}, true
	}
	root, inter := active[store.SlotRoot], active[store.SlotIntermediate]
	if !th.Manual && root != nil && root.KeyOnline && th.AutoRoot && prepared[store.SlotRoot] == nil && pastPrepare(root, now, th) {
		return Step{Action: Prepare, Kind: store.SlotRoot, Why: fmt.Sprintf("root %d is past %.0f%% of its life", root.ID, th.prepareAt()*100)}, true
	}
	// New intermediates are signed by the newest root.
	signer := root
	if prepared[store.SlotRoot] != nil {
		signer = prepared[store.SlotRoot]
	}
	if !th.Manual && root != nil && signer.KeyOnline && inter != nil && prepared[store.SlotIntermediate] == nil {
		switch {
		case inter.Parent != root.ID:
			return Step{Action: Prepare, Kind: store.SlotIntermediate, Why: fmt.Sprintf("root %d is active and intermediate %d was signed by root %d", root.ID, inter.ID, inter.Parent)}, true
		case pastPrepare(inter, now, th):
			return Step{Action: Prepare, Kind: store.SlotIntermediate, Why: fmt.Sprintf("intermediate %d is past %.0f%% of its life", inter.ID, th.prepareAt()*100)}, true
		}
	}
	for i := range slots {
		s := &slots[i]
		if s.State != store.SlotRetired {
			continue
		}
		switch {
		case !now.Before(s.NotAfter):
			return Step{Action: Remove, Kind: s.Kind, Slot: s.ID, Why: "it has expired"}, true
		case !now.Before(s.IssuedUntil):
			return Step{Action: Remove, Kind: s.Kind, Slot: s.ID, Why: "every certificate it signed has expired"}, true
		}
	}
	return Step{}, false
}

func pastPrepare(s *Slot, now time.Time, th Thresholds) bool {
	life := s.NotAfter.Sub(s.NotBefore)
	return !now.Before(s.NotBefore.Add(time.Duration(float64(life) * th.prepareAt())))
}

// Due is a step and when it becomes due.
type Due struct {
	Step Step
	At   time.Time
}

// Schedule lists the steps the thresholds will take next and when, for
// status output: the next activation, preparation and removals. A removal
// of a retired slot is due when its IssuedUntil has passed, so give the
// slots their IssuedUntil (zero shows it as due at its NotAfter).
func Schedule(slots []Slot, th Thresholds) []Due {
	var out []Due
	var root, inter, prepInter, prepRoot *Slot
	for i := range slots {
		s := &slots[i]
		switch {
		case s.State == store.SlotActive && s.Kind == store.SlotRoot:
			root = s
		case s.State == store.SlotActive:
			inter = s
		case s.State == store.SlotPrepared && s.Kind == store.SlotRoot:
			prepRoot = s
		case s.State == store.SlotPrepared:
			prepInter = s
		}
	}
	for _, p := range []*Slot{prepRoot, prepInter} {
		if p != nil && !th.Manual {
			out = append(out, Due{Step{Action: Activate, Kind: p.Kind, Slot: p.ID, Why: "propagation over"}, p.PreparedAt.Add(th.Propagation)})
		}
	}
	if !th.Manual && root != nil && root.KeyOnline && th.AutoRoot && prepRoot == nil {
		out = append(out, Due{Step{Action: Prepare, Kind: store.SlotRoot, Why: "past PrepareAt of the root's life"}, prepareTime(root, th)})
	}
	if !th.Manual && root != nil && inter != nil && prepInter == nil {
		why, at := "past PrepareAt of the intermediate's life", prepareTime(inter, th)
		if inter.Parent != root.ID {
			why, at = "the root rolled over", inter.ActivatedAt
		}
		if !root.KeyOnline {
			why += "; the root is offline: sign the next intermediate at the root ceremony"
		}
		out = append(out, Due{Step{Action: Prepare, Kind: store.SlotIntermediate, Why: why}, at})
	}
	for i := range slots {
		s := &slots[i]
		if s.State != store.SlotRetired {
			continue
		}
		at := s.NotAfter
		if !s.IssuedUntil.IsZero() && s.IssuedUntil.Before(at) {
			at = s.IssuedUntil
		}
		out = append(out, Due{Step{Action: Remove, Kind: s.Kind, Slot: s.ID, Why: "its last certificate expires"}, at})
	}
	return out
}

func prepareTime(s *Slot, th Thresholds) time.Time {
	return s.NotBefore.Add(time.Duration(float64(s.NotAfter.Sub(s.NotBefore)) * th.prepareAt()))
}
