package limits_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/limits"
	"github.com/mica-pki/mica/internal/policy"
)

// BenchmarkAdmit measures the guard's admission of one request: three
// token buckets, then the storm (renewals) and burst detectors, over many
// identities and sources, with every limit on and nothing refused. Keys
// cycle through more identities than max_keys holds, so the LRU evicts.
func BenchmarkAdmit(b *testing.B) {
	for _, bc := range []struct {
		name string
		keys int
	}{{"10k-identities", 10_000}, {"1M-identities-evicting", 1_000_000}} {
		b.Run(bc.name, func(b *testing.B) {
			var l limits.Limits
			var a limits.Anomalies
			yaml.Unmarshal([]byte("max_keys: 100000\nper_identity: {rate: 1000/s}\nper_requester: {rate: 1000000/s}\nper_source: {rate: 1000000/s}"), &l)
			yaml.Unmarshal([]byte("issuance_burst: {per_profile: 1000000000, per_requester: 1000000000}\nrenewal_storm: {max_renewals_per_lifetime: 1000}"), &a)
			rules, err := limits.Compile(l, a, []string{"service"})
			if err != nil {
				b.Fatal(err)
			}
			g, err := limits.New(limits.Config{Rules: rules, Recorder: &events{}})
			if err != nil {
				b.Fatal(err)
			}
			attempts := make([]authority.Attempt, 4096)
			for i := range attempts {
				attempts[i] = authority.Attempt{Method: policy.MethodRenew, Profile: "service",
					Source: netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1}), Lifetime: time.Hour}
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
					at.Identity = ids[(i*7919)%len(ids)]
					at.Requester = at.Identity
					if err := g.Admit(ctx, at); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		})
	}
}
