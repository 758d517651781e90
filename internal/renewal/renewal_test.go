package renewal

import (
	"testing"
	"time"
)

func TestRenewAt(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		life time.Duration
		r    float64
		want time.Duration // after notBefore
	}{
		{"no jitter at the middle of the window", 90 * time.Minute, 0.5, 60 * time.Minute},
		{"earliest", 90 * time.Minute, 0, 60*time.Minute - 270*time.Second},
		{"latest", 100 * time.Second, 1, 100*time.Second*2/3 + 5*time.Second},
		{"a day", 24 * time.Hour, 0.5, 16 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := RenewAt(nb, nb.Add(tt.life), tt.r).Sub(nb)
			if diff := got - tt.want; diff > time.Millisecond || diff < -time.Millisecond {
				t.Errorf("RenewAt = notBefore+%s, want +%s", got, tt.want)
			}
			if got >= tt.life {
				t.Errorf("renewal at %s is not before expiry %s", got, tt.life)
			}
		})
	}
}

func TestExpiringSoon(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(60 * time.Minute)
	tests := []struct {
		name string
		at   time.Duration
		want bool
	}{
		{"fresh", 0, false},
		{"at the renewal point", 40 * time.Minute, false},
		{"past every jittered renewal point", 51 * time.Minute, true},
		{"expired", 61 * time.Minute, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ExpiringSoon(nb.Add(tt.at), nb, na); got != tt.want {
				t.Errorf("ExpiringSoon(+%s) = %v, want %v", tt.at, got, tt.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		name      string
		attempt   int
		r         float64
		want      time.Duration
		base, max time.Duration
	}{
		{"first retry, no jitter", 0, 0, 500 * time.Millisecond, time.Second, time.Minute},
		{"first retry, full jitter", 0, 0.999999, time.Second, time.Second, time.Minute},
		{"doubles", 3, 0, 4 * time.Second, time.Second, time.Minute},
		{"capped", 20, 0, 30 * time.Second, time.Second, time.Minute},
		{"huge attempt does not overflow", 1 << 20, 1, time.Minute, time.Second, time.Minute},
		{"zero base", 3, 0.5, 0, 0, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Backoff(tt.attempt, tt.base, tt.max, tt.r)
			if diff := got - tt.want; diff > time.Millisecond || diff < -time.Millisecond {
				t.Errorf("Backoff(%d, r=%v) = %s, want %s", tt.attempt, tt.r, got, tt.want)
			}
		})
	}
}

func TestRetryCap(t *testing.T) {
	tests := []struct {
		life, limit, want time.Duration
	}{
		{24 * time.Hour, 5 * time.Minute, 5 * time.Minute},
		{12 * time.Second, 5 * time.Minute, time.Second},
		{100 * time.Millisecond, 5 * time.Minute, 50 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.life.String(), func(t *testing.T) {
			if got := RetryCap(tt.life, tt.limit); got != tt.want {
				t.Errorf("RetryCap(%s) = %s, want %s", tt.life, got, tt.want)
			}
		})
	}
}
