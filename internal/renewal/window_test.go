package renewal

import (
	"testing"
	"time"
)

func TestWindowHoldsEveryRenewAt(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, life := range []time.Duration{time.Hour, 24 * time.Hour, 90 * 24 * time.Hour} {
		na := nb.Add(life)
		start, end := Window(nb, na)
		if !start.Before(end) || start.Before(nb) || end.After(na) {
			t.Fatalf("life %v: window [%v, %v] is not inside the validity", life, start, end)
		}
		for _, r := range []float64{0, 0.25, 0.5, 0.999999} {
			if at := RenewAt(nb, na, r); at.Before(start) || at.After(end) {
				t.Errorf("life %v: RenewAt(r=%v) = %v, outside the window [%v, %v]", life, r, at, start, end)
			}
		}
		// Two thirds of the life is the middle of the window.
		if mid := start.Add(end.Sub(start) / 2); mid.Sub(nb.Add(life*2/3)).Abs() > time.Millisecond {
			t.Errorf("life %v: window middle %v, want two thirds of the life", life, mid)
		}
	}
}
