package rotation

import (
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/duration"
)

func TestSettings(t *testing.T) {
	r, err := Settings{}.Resolve(24 * time.Hour)
	if err != nil || r.Thresholds.PrepareAt != 0.5 || r.Thresholds.Propagation != 24*time.Hour || r.Thresholds.AutoRoot ||
		r.IntermediateLifetime != 365*24*time.Hour || r.Poll != 10*time.Second {
		t.Fatalf("defaults: %+v, %v", r, err)
	}
	r, err = Settings{RootRollover: "auto", Propagation: duration.Duration(time.Minute), IntermediateLifetime: duration.Duration(time.Hour)}.Resolve(10 * time.Minute)
	if err != nil || !r.Thresholds.AutoRoot || r.Thresholds.Propagation != time.Minute {
		t.Fatalf("auto: %+v, %v", r, err)
	}
	for _, tc := range []struct {
		s    Settings
		want string
	}{
		{Settings{PrepareAt: 1}, "between 0 and 1"},
		{Settings{RootRollover: "sometimes"}, "manual or auto"},
		{Settings{Rotation: "weekly"}, "auto or manual"},
		{Settings{IntermediateLifetime: duration.Duration(3 * 24 * time.Hour)}, "lengthen ca.intermediate_lifetime"},
		{Settings{RootLifetime: duration.Duration(100 * 24 * time.Hour)}, "longer than ca.intermediate_lifetime"},
	} {
		if _, err := tc.s.Resolve(24 * time.Hour); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error saying %q", tc.s, err, tc.want)
		}
	}
}
