package ratelimit

import (
	"strconv"
	"testing"
	"time"
)

// BenchmarkTake measures one Take: on a few hot keys, on 100,000 keys that
// all fit, and on a million keys cycling through a 100,000-key bound (every
// Take inserts and evicts).
func BenchmarkTake(b *testing.B) {
	for _, bc := range []struct {
		name          string
		keys, maxKeys int
	}{
		{"hot-keys", 16, 100_000},
		{"100k-keys", 100_000, 100_000},
		{"1M-keys-evicting", 1_000_000, 100_000},
	} {
		b.Run(bc.name, func(b *testing.B) {
			keys := make([]string, bc.keys)
			for i := range keys {
				keys[i] = "spiffe://example.org/workload/" + strconv.Itoa(i)
			}
			bk := New(Limit{Rate: Rate{Events: 1000, Per: time.Second}, Burst: 1000}, bc.maxKeys, nil)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					bk.Take(keys[i%len(keys)])
					i += 7919
				}
			})
		})
	}
}
