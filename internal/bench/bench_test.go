package bench

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

func TestLoop(t *testing.T) {
	var calls atomic.Int64
	boom := errors.New("boom")
	lat, failed, first := Loop(context.Background(), 3, 20*time.Millisecond, func(w, i int) error {
		calls.Add(1)
		if i%2 == 1 {
			return boom
		}
		return nil
	})
	if int64(len(lat)+failed) != calls.Load() || len(lat) == 0 || failed == 0 {
		t.Fatalf("%d latencies + %d failures for %d calls", len(lat), failed, calls.Load())
	}
	if !errors.Is(first, boom) {
		t.Errorf("first error %v, want boom", first)
	}
	// A cancelled context ends the loop before the duration.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if lat, failed, _ := Loop(ctx, 2, time.Hour, func(int, int) error { return nil }); len(lat)+failed != 0 {
		t.Errorf("cancelled loop ran %d ops", len(lat)+failed)
	}
}

func TestPercentile(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 100; i++ {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	slices.Sort(lat)
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0, time.Millisecond}, {0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}} {
		if got := Percentile(lat, tc.q); got != tc.want {
			t.Errorf("Percentile(%v) = %s, want %s", tc.q, got, tc.want)
		}
	}
	if Percentile(nil, 0.5) != 0 || Ms(1500*time.Microsecond) != 1.5 {
		t.Error("Percentile of nothing or Ms is wrong")
	}
}
