package issuance_test

import (
	"crypto/rand"
	"crypto/x509"
	"sort"
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

// BenchmarkIssue is the whole path for a P-256 leaf from a P-256
// intermediate: validate, template, lint-sign, lint, sign, parse.
func BenchmarkIssue(b *testing.B) {
	p := testpki.New(b, "example.org")
	req := benchRequest(b, p)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Issuer.Issue(req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLint is linting alone, on an already signed leaf.
func BenchmarkLint(b *testing.B) {
	p := testpki.New(b, "example.org")
	leaf := p.Leaf(b, p.ID(b, "/ns/prod/sa/web"))
	b.ReportAllocs()
	for b.Loop() {
		if err := issuance.Lint(leaf.Cert.Raw); err != nil {
			b.Fatal(err)
		}
	}
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
			for b.Loop() {
				zlint.LintCertificateEx(zc, r.reg)
			}
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
			for b.Loop() {
				l.Execute(zc, cfg)
			}
		})
	}
}
