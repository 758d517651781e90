package rotation

import (
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

var t0 = time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)

func at(h float64) time.Time { return t0.Add(time.Duration(h * float64(time.Hour))) }

// A CA of 100 hours: root 1 (1000 h), intermediate 2 (100 h from t0).
func baseSlots() []Slot {
	return []Slot{
		{ID: 1, Kind: store.SlotRoot, State: store.SlotActive, NotBefore: t0, NotAfter: at(1000), PreparedAt: t0, KeyOnline: true},
		{ID: 2, Kind: store.SlotIntermediate, State: store.SlotActive, Parent: 1, NotBefore: t0, NotAfter: at(100), PreparedAt: t0, KeyOnline: true},
	}
}

func with(slots []Slot, extra ...Slot) []Slot { return append(append([]Slot(nil), slots...), extra...) }

func TestNext(t *testing.T) {
	th := Thresholds{PrepareAt: 0.5, Propagation: 10 * time.Hour, AutoRoot: true}
	prepared3 := Slot{ID: 3, Kind: store.SlotIntermediate, State: store.SlotPrepared, Parent: 1, NotBefore: at(50), NotAfter: at(150), PreparedAt: at(50), KeyOnline: true}
	offline := baseSlots()
	offline[0].KeyOnline = false
	rolled := []Slot{
		{ID: 1, Kind: store.SlotRoot, State: store.SlotRetired, NotBefore: t0, NotAfter: at(1000), KeyOnline: true, IssuedUntil: at(100)},
		{ID: 2, Kind: store.SlotIntermediate, State: store.SlotActive, Parent: 1, NotBefore: t0, NotAfter: at(100), KeyOnline: true},
		{ID: 3, Kind: store.SlotRoot, State: store.SlotActive, Parent: 1, NotBefore: at(10), NotAfter: at(1010), KeyOnline: true},
	}
	retired := []Slot{
		{ID: 1, Kind: store.SlotRoot, State: store.SlotActive, NotBefore: t0, NotAfter: at(1000), KeyOnline: true},
		{ID: 2, Kind: store.SlotIntermediate, State: store.SlotRetired, Parent: 1, NotBefore: t0, NotAfter: at(100), RetiredAt: at(60), KeyOnline: true, IssuedUntil: at(70)},
		{ID: 3, Kind: store.SlotIntermediate, State: store.SlotActive, Parent: 1, NotBefore: at(50), NotAfter: at(150), KeyOnline: true},
	}
	for _, tc := range []struct {
		name  string
		slots []Slot
		now   time.Time
		th    Thresholds
		want  *Step
	}{
		{"young intermediate: nothing due", baseSlots(), at(49), th, nil},
		{"half of the intermediate's life: prepare", baseSlots(), at(50), th, &Step{Action: Prepare, Kind: store.SlotIntermediate}},
		{"a custom PrepareAt", baseSlots(), at(30), Thresholds{PrepareAt: 0.3, Propagation: time.Hour}, &Step{Action: Prepare, Kind: store.SlotIntermediate}},
		{"prepared, propagating: nothing due", with(baseSlots(), prepared3), at(59.9), th, nil},
		{"propagated: activate", with(baseSlots(), prepared3), at(60), th, &Step{Action: Activate, Kind: store.SlotIntermediate, Slot: 3}},
		{"offline root: nothing prepared", offline, at(80), th, nil},
		{"manual rotation: nothing prepared", baseSlots(), at(80), Thresholds{Propagation: 10 * time.Hour, Manual: true}, nil},
		{"manual rotation: nothing activated", with(baseSlots(), prepared3), at(90), Thresholds{Propagation: 10 * time.Hour, Manual: true}, nil},
		{"manual rotation: removals go on", retired, at(70), Thresholds{Propagation: 10 * time.Hour, Manual: true}, &Step{Action: Remove, Kind: store.SlotIntermediate, Slot: 2}},
		{"root past half its life, AutoRoot: prepare the root", baseSlots(), at(500), th, &Step{Action: Prepare, Kind: store.SlotRoot}},
		{"root past half its life, no AutoRoot: the intermediate only", baseSlots(), at(500), Thresholds{PrepareAt: 0.5, Propagation: 10 * time.Hour}, &Step{Action: Prepare, Kind: store.SlotIntermediate}},
		{"the root rolled over: prepare an intermediate under the new root", rolled, at(20), th, &Step{Action: Prepare, Kind: store.SlotIntermediate}},
		{"prepared under the old root: it still activates", with(rolled, Slot{ID: 4, Kind: store.SlotIntermediate, State: store.SlotPrepared, Parent: 1, PreparedAt: at(5), NotAfter: at(105)}),
			at(20), th, &Step{Action: Activate, Kind: store.SlotIntermediate, Slot: 4}},
		{"prepared under a prepared root: it waits for the root", with(baseSlots(),
			Slot{ID: 3, Kind: store.SlotRoot, State: store.SlotPrepared, Parent: 1, NotBefore: at(500), NotAfter: at(1500), PreparedAt: at(505), KeyOnline: true},
			Slot{ID: 4, Kind: store.SlotIntermediate, State: store.SlotPrepared, Parent: 3, PreparedAt: at(500), NotAfter: at(600)}),
			at(511), th, nil},
		{"a root and its intermediate propagated: the root first", with(baseSlots(),
			Slot{ID: 3, Kind: store.SlotRoot, State: store.SlotPrepared, Parent: 1, NotBefore: at(500), NotAfter: at(1500), PreparedAt: at(500), KeyOnline: true},
			Slot{ID: 4, Kind: store.SlotIntermediate, State: store.SlotPrepared, Parent: 3, PreparedAt: at(500), NotAfter: at(600)}),
			at(510), th, &Step{Action: Activate, Kind: store.SlotRoot, Slot: 3}},
		{"a prepared root: the next intermediate is prepared (under it)", with(baseSlots(),
			Slot{ID: 3, Kind: store.SlotRoot, State: store.SlotPrepared, Parent: 1, NotBefore: at(50), NotAfter: at(1050), PreparedAt: at(50), KeyOnline: true}),
			at(55), th, &Step{Action: Prepare, Kind: store.SlotIntermediate}},
		{"retired, leaves alive: kept", retired, at(69), th, nil},
		{"retired, last leaf expired: removed", retired, at(70), th, &Step{Action: Remove, Kind: store.SlotIntermediate, Slot: 2}},
		{"retired root with an intermediate alive: kept", with(rolled, Slot{ID: 5, Kind: store.SlotIntermediate, State: store.SlotPrepared, Parent: 3, PreparedAt: at(20), NotAfter: at(120)}), at(29), th, nil},
		{"retired root, its intermediates gone: removed", []Slot{rolled[0], rolled[2],
			{ID: 4, Kind: store.SlotIntermediate, State: store.SlotActive, Parent: 3, NotBefore: at(90), NotAfter: at(190), KeyOnline: true}},
			at(100), th, &Step{Action: Remove, Kind: store.SlotRoot, Slot: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := Next(tc.slots, tc.now, tc.th)
			if tc.want == nil {
				if ok {
					t.Fatalf("Next = %s, want nothing", got)
				}
				return
			}
			if !ok || got.Action != tc.want.Action || got.Kind != tc.want.Kind || got.Slot != tc.want.Slot {
				t.Fatalf("Next = %v (%v), want %s %s %d", got, ok, tc.want.Action, tc.want.Kind, tc.want.Slot)
			}
			if got.Why == "" {
				t.Error("a step without a reason")
			}
		})
	}
}
