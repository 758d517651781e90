package issuance_test

import (
	"crypto/rand"
	"crypto/x509"
	"sort"
	"syscall"
	"testing"
	"time"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3"
	"github.com/zmap/zlint/v3/lint"

	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/testpki"
)

func benchRequest(b *testing.B, p *testpki.PKI) issuance.Request {
	key, err := keys.Generate(keys.ECDSAP256, rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	return issuance.Request{
		PublicKey:   key.Public(),
		Identity:    p.ID(b, "/ns/prod/sa/web"),
		NotBefore:   now.Add(-time.Minute),
		NotAfter:    now.Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
}

// cpuLoop is b.Loop that also reports the process's CPU time per
// iteration (cpu-ns/op): on a shared machine the wall time of an
// iteration includes the time others had the core, its CPU time does not.
// Run with GOMAXPROCS=1 so that the garbage collector's share is the
// loop's own.
func cpuLoop(b *testing.B, f func()) {
	b.Helper()
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
		f()
		n++
	}
	b.ReportMetric(float64(cpu()-start)/float64(n), "cpu-ns/op")
}

// BenchmarkIssue is the whole path for a P-256 leaf from a P-256
// intermediate: validate, template, lint (a remembered shape), sign,
// check the signature, parse.
func BenchmarkIssue(b *testing.B) {
	p := testpki.New(b, "example.org")
	req := benchRequest(b, p)
	cpuLoop(b, func() {
		if _, err := p.Issuer.Issue(req); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkPrepare is validate, template and lint for a P-256 SPIFFE leaf:
// of a shape linted before (the usual case), and with zlint in full (the
// first leaf of a shape, or one with values that are not plain: here a
// DNS name in upper case).
func BenchmarkPrepare(b *testing.B) {
	p := testpki.New(b, "example.org")
	req := benchRequest(b, p)
	b.Run("remembered-shape", func(b *testing.B) {
		cpuLoop(b, func() {
			if _, err := p.Issuer.Prepare(req); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("full-zlint", func(b *testing.B) {
		issuance.SetTemplateHook(p.Issuer, func(c *x509.Certificate) { c.DNSNames = []string{"Web.example.org"} })
		defer issuance.SetTemplateHook(p.Issuer, nil)
		cpuLoop(b, func() {
			if _, err := p.Issuer.Prepare(req); err != nil {
				b.Fatal(err)
			}
		})
	})
}

// BenchmarkLint is zlint in full alone, on an already signed leaf: the
// zcrypto parse and mica's leaf lints.
func BenchmarkLint(b *testing.B) {
	p := testpki.New(b, "example.org")
	leaf := p.Leaf(b, p.ID(b, "/ns/prod/sa/web"))
	cpuLoop(b, func() {
		if err := issuance.Lint(leaf.Cert.Raw); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkLintRegistry compares registries on the same P-256 leaf: mica's
// leaf set, the CA set (leaf set plus the CA-only lints), the candidate
// sources before exclusions, and zlint's whole global registry (the default
// when no registry is given). Parsing is outside the loop.
func BenchmarkLintRegistry(b *testing.B) {
	p := testpki.New(b, "example.org")
	leaf := p.Leaf(b, p.ID(b, "/ns/prod/sa/web"))
	zc, err := zx509.ParseCertificate(leaf.Cert.Raw)
	if err != nil {
		b.Fatal(err)
	}
	candidates, err := lint.GlobalRegistry().Filter(lint.FilterOptions{IncludeSources: issuance.LintSources})
	if err != nil {
		b.Fatal(err)
	}
	leafSet, err := candidates.Filter(lint.FilterOptions{ExcludeNames: append(append([]string(nil), issuance.LintExcluded...), issuance.LintCAOnly...)})
	if err != nil {
		b.Fatal(err)
	}
	caSet, err := candidates.Filter(lint.FilterOptions{ExcludeNames: issuance.LintExcluded})
	if err != nil {
		b.Fatal(err)
	}
	for _, r := range []struct {
		name string
		reg  lint.Registry
	}{{"mica-leaf", leafSet}, {"mica-ca", caSet}, {"candidates", candidates}, {"global", lint.GlobalRegistry()}} {
		b.Run(r.name, func(b *testing.B) {
			cpuLoop(b, func() { zlint.LintCertificateEx(zc, r.reg) })
		})
	}
}

// BenchmarkEachLint measures every candidate lint alone on a P-256 SPIFFE
// leaf and a P-256 intermediate, to find the expensive ones. Run with
// -bench EachLint -benchtime 2000x and sort by ns/op.
func BenchmarkEachLint(b *testing.B) {
	p := testpki.New(b, "example.org")
	leaf := p.Leaf(b, p.ID(b, "/ns/prod/sa/web"))
	reg, err := lint.GlobalRegistry().Filter(lint.FilterOptions{IncludeSources: issuance.LintSources})
	if err != nil {
		b.Fatal(err)
	}
	zc, err := zx509.ParseCertificate(leaf.Cert.Raw)
	if err != nil {
		b.Fatal(err)
	}
	lints := reg.CertificateLints().Lints()
	sort.Slice(lints, func(i, j int) bool { return lints[i].Name < lints[j].Name })
	cfg := reg.GetConfiguration()
	for _, l := range lints {
		b.Run(l.Name, func(b *testing.B) {
			cpuLoop(b, func() { l.Execute(zc, cfg) })
		})
	}
}

// BenchmarkZcryptoParse is the parse zlint needs before any lint runs.
func BenchmarkZcryptoParse(b *testing.B) {
	p := testpki.New(b, "example.org")
	leaf := p.Leaf(b, p.ID(b, "/ns/prod/sa/web"))
	cpuLoop(b, func() {
		if _, err := zx509.ParseCertificate(leaf.Cert.Raw); err != nil {
			b.Fatal(err)
		}
	})
}
