package policy

import (
	"crypto/x509"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/duration"
)

// TestLiveSwap decides on many goroutines while the policy is swapped back
// and forth: every decision is wholly one policy's (its TTL and its
// usages agree), never a mix, and none fails.
func TestLiveSwap(t *testing.T) {
	engine := func(ttl time.Duration, eku string) *Engine {
		return mustEngine(t, Config{TrustDomain: "example.org", Profiles: map[string]ProfileConfig{
			"service": {SPIFFE: []string{"/billing/*"}, DefaultTTL: duration.Duration(ttl), MaxTTL: duration.Duration(ttl), ExtKeyUsage: []string{eku}},
		}})
	}
	a, b := engine(time.Hour, "clientAuth"), engine(2*time.Hour, "serverAuth")
	live := NewLive(a)
	req := Request{Profile: "service", Identity: identity.Identity{SPIFFE: sid("spiffe://example.org/billing/api")},
		PublicKey: mustKey(t, "ecdsa-p256"), Method: MethodToken, Source: netip.MustParseAddr("10.0.0.1")}
	var stop atomic.Bool
	var seen [2]atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				d, err := live.Decide(req)
				if err != nil {
					t.Error(err)
					return
				}
				switch {
				case d.TTL == time.Hour && len(d.ExtKeyUsage) == 1 && d.ExtKeyUsage[0] == x509.ExtKeyUsageClientAuth:
					seen[0].Add(1)
				case d.TTL == 2*time.Hour && len(d.ExtKeyUsage) == 1 && d.ExtKeyUsage[0] == x509.ExtKeyUsageServerAuth:
					seen[1].Add(1)
				default:
					t.Errorf("a decision of neither policy: %+v", d)
					return
				}
			}
		})
	}
	for i := range 2000 {
		if i%2 == 0 {
			live.Swap(b)
		} else {
			live.Swap(a)
		}
	}
	stop.Store(true)
	wg.Wait()
	if live.Engine() != a {
		t.Error("Engine is not the last one swapped in")
	}
	if err := live.CheckIdentity("service", identity.Identity{SPIFFE: sid("spiffe://example.org/payments/api")}); err == nil {
		t.Error("CheckIdentity did not ask the current policy")
	}
}
