package limits_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/limits"
	"github.com/mica-pki/mica/internal/policy"
)

// BenchmarkAdmit measures the guard's admission of one renewal: three
// token buckets, then the storm and burst detectors, with every limit on
// and nothing firing. A fake clock advances 20ms per request, so each of
// 10,000 identities renews every 200s with 5-minute certificates (two
// thirds of a lifetime, as agents do); with a million identities the keys
// outnumber max_keys and the LRU evicts on every request.
func BenchmarkAdmit(b *testing.B) {
	for _, bc := range []struct {
		name string
		keys int
	}{{"10k-identities", 10_000}, {"1M-identities-evicting", 1_000_000}} {
		b.Run(bc.name, func(b *testing.B) {
			var l limits.Limits
			var a limits.Anomalies
			yaml.Unmarshal([]byte("max_keys: 100000\nper_identity: {rate: 1000/s}\nper_requester: {rate: 1000000/s}\nper_source: {rate: 1000000/s}"), &l)
			yaml.Unmarshal([]byte("issuance_burst: {per_profile: 1000000000, per_requester: 1000000000}"), &a)
			rules, err := limits.Compile(l, a, []string{"service"})
			if err != nil {
				b.Fatal(err)
			}
			// About five clock reads per Admit: 4ms each is 20ms a request.
			var ticks atomic.Int64
			start := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
			clock := func() time.Time { return start.Add(time.Duration(ticks.Add(1)) * 4 * time.Millisecond) }
			rec := &events{}
			g, err := limits.New(limits.Config{Rules: rules, Recorder: rec, Clock: clock})
			if err != nil {
				b.Fatal(err)
			}
			attempts := make([]authority.Attempt, 4096)
			for i := range attempts {
				attempts[i] = authority.Attempt{Method: policy.MethodRenew, Profile: "service",
					Source: netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1}), Lifetime: 5 * time.Minute}
			}
			ids := make([]string, bc.keys)
			for i := range ids {
				ids[i] = fmt.Sprint("spiffe://example.org/workload/", i)
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					at := attempts[i%len(attempts)]
					at.Identity = ids[i%len(ids)]
					at.Requester = at.Identity
					if err := g.Admit(ctx, at); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
			b.StopTimer()
			if n := len(rec.evs); n > 0 {
				b.Fatalf("%d events: something fired (%s)", n, rec.evs[0].Detail)
			}
		})
	}
}
