package token

import (
	"crypto/ed25519"
	"syscall"
	"testing"
	"time"
)

// BenchmarkVerify is one enrollment token's check, in wall and CPU time
// (cpu-ns/op; run with GOMAXPROCS=1 on a shared machine).
func BenchmarkVerify(b *testing.B) {
	pub, priv := testKey(b)
	m, err := NewMinter(priv)
	if err != nil {
		b.Fatal(err)
	}
	v := NewVerifier(pub)
	now := time.Now()
	raw, err := m.Mint(Claims{Identity: "spiffe://example.org/billing/api", Profile: "service", Issuer: "spiffe://example.org/mica/admin/admin",
		IssuedAt: now, Expiry: now.Add(time.Hour), RootFingerprint: "de15b3a9fa52c4cbf607c5dfb42a893d67930d5818eecad2f35f29217df3917c"})
	if err != nil {
		b.Fatal(err)
	}
	cpu := func() int64 {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return ru.Utime.Nano() + ru.Stime.Nano()
	}
	b.ReportAllocs()
	start, n := cpu(), 0
	for b.Loop() {
		if _, err := v.Verify(raw, now); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(cpu()-start)/float64(n), "cpu-ns/op")
}

func testKey(b *testing.B) (ed25519.PublicKey, ed25519.PrivateKey) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		b.Fatal(err)
	}
	return pub, priv
}
