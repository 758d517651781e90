package crl

import (
	"encoding/binary"
	"iter"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"crypto/x509"

	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/testlayer"
	"github.com/mica-pki/mica/internal/testpki"
)

var now = time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)

func clock() time.Time { return now }

// entries yields n synthetic entries with 16-byte serials whose top bit is
// set for every other one, so the sign byte is exercised.
func entries(n int) iter.Seq[Entry] {
	return func(yield func(Entry) bool) {
		for i := range n {
			s := make([]byte, 16)
			binary.BigEndian.PutUint64(s[8:], uint64(i)+1)
			if i%2 == 1 {
				s[0] = 0x80
			}
			if !yield(Entry{Serial: s, RevokedAt: now.Add(-time.Duration(i) * time.Second), Reason: []int{0, 1, 4, 5, 9}[i%5]}) {
				return
			}
		}
	}
}

func TestBuild(t *testing.T) {
	for _, alg := range []keys.Algorithm{keys.ECDSAP256, keys.ECDSAP384, keys.Ed25519, keys.RSA3072} {
		for _, n := range []int{0, 1, 1000} {
			t.Run(string(alg)+"/"+big.NewInt(int64(n)).String(), func(t *testing.T) {
				pki := testpki.New(t, "example.org", testpki.WithAlgorithm(alg), testpki.WithClock(clock))
				der, err := Build(Params{Issuer: pki.Intermediate, Signer: issuance.NewCRLSigner(pki.Intermediate, pki.IntermediateKey), Number: big.NewInt(42),
					ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour), Entries: n}, entries(n))
				if err != nil {
					t.Fatal(err)
				}
				crl, err := x509.ParseRevocationList(der)
				if err != nil {
					t.Fatalf("crypto/x509 cannot parse it: %v", err)
				}
				if err := crl.CheckSignatureFrom(pki.Intermediate); err != nil {
					t.Fatalf("signature: %v", err)
				}
				if crl.Number.Int64() != 42 || !crl.ThisUpdate.Equal(now) || !crl.NextUpdate.Equal(now.Add(24*time.Hour)) ||
					!slices.Equal(crl.AuthorityKeyId, pki.Intermediate.SubjectKeyId) || len(crl.RevokedCertificateEntries) != n {
					t.Fatalf("fields: number %v this %v next %v aki %x entries %d", crl.Number, crl.ThisUpdate, crl.NextUpdate, crl.AuthorityKeyId, len(crl.RevokedCertificateEntries))
				}
				i := 0
				for want := range entries(n) {
					got := crl.RevokedCertificateEntries[i]
					if got.SerialNumber.Cmp(new(big.Int).SetBytes(want.Serial)) != 0 || !got.RevocationTime.Equal(want.RevokedAt) || got.ReasonCode != want.Reason {
						t.Fatalf("entry %d = %v %v %d, want %x %v %d", i, got.SerialNumber, got.RevocationTime, got.ReasonCode, want.Serial, want.RevokedAt, want.Reason)
					}
					i++
				}
				if err := issuance.LintCRL(der); err != nil {
					t.Errorf("zlint: %v", err)
				}
			})
		}
	}
}

func TestBuildRefuses(t *testing.T) {
	pki := testpki.New(t, "example.org", testpki.WithClock(clock))
	ok := Params{Issuer: pki.Intermediate, Signer: issuance.NewCRLSigner(pki.Intermediate, pki.IntermediateKey), Number: big.NewInt(1), ThisUpdate: now, NextUpdate: now.Add(time.Hour)}
	tests := []struct {
		name    string
		edit    func(*Params)
		entries []Entry
	}{
		{"NoSigner", func(p *Params) { p.Signer = nil }, nil},
		{"NextBeforeThis", func(p *Params) { p.NextUpdate = now.Add(-time.Hour) }, nil},
		{"NumberTooLong", func(p *Params) { p.Number = new(big.Int).Lsh(big.NewInt(1), 170) }, nil},
		{"EmptySerial", func(*Params) {}, []Entry{{RevokedAt: now}}},
		{"SerialTooLong", func(*Params) {}, []Entry{{Serial: []byte(strings.Repeat("\xff", 21)), RevokedAt: now}}},
		{"BadReason", func(*Params) {}, []Entry{{Serial: []byte{1}, RevokedAt: now, Reason: 7}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := ok
			tc.edit(&p)
			if _, err := Build(p, slices.Values(tc.entries)); err == nil || !strings.HasPrefix(err.Error(), "crl: ") {
				t.Fatalf("Build = %v, want a crl: error", err)
			}
		})
	}
}

// TestOpenSSL checks the CRL with openssl: it prints the entries and
// verification with -crl_check fails for a listed certificate and passes
// for another.
func TestOpenSSL(t *testing.T) {
	openssl := testlayer.Tool(t, "openssl")
	pki := testpki.New(t, "example.org")
	revoked := pki.Leaf(t, pki.ID(t, "/revoked"))
	live := pki.Leaf(t, pki.ID(t, "/live"))
	der, err := Build(Params{Issuer: pki.Intermediate, Signer: issuance.NewCRLSigner(pki.Intermediate, pki.IntermediateKey), Number: big.NewInt(7),
		ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour)},
		slices.Values([]Entry{{Serial: revoked.Cert.SerialNumber.Bytes(), RevokedAt: time.Now().Add(-time.Minute), Reason: 1}}))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rootPath, interPath := pki.WriteCA(t, dir)
	crlPath := filepath.Join(dir, "crl.der")
	os.WriteFile(crlPath, der, 0o644)
	out, err := exec.Command(openssl, "crl", "-inform", "DER", "-in", crlPath, "-noout", "-text").CombinedOutput()
	if err != nil || !strings.Contains(strings.ToUpper(strings.ReplaceAll(string(out), ":", "")), strings.ToUpper(revoked.Cert.SerialNumber.Text(16))) ||
		!strings.Contains(string(out), "Key Compromise") {
		t.Fatalf("openssl crl: %v\n%s", err, out)
	}
	pemCRL := filepath.Join(dir, "crl.pem")
	if out, err := exec.Command(openssl, "crl", "-inform", "DER", "-in", crlPath, "-out", pemCRL).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	verify := func(l *testpki.Leaf) (string, error) {
		leafPath, _ := l.Write(t, t.TempDir(), "leaf")
		out, err := exec.Command(openssl, "verify", "-crl_check", "-CRLfile", pemCRL, "-CAfile", rootPath, "-untrusted", interPath, leafPath).CombinedOutput()
		return string(out), err
	}
	if out, err := verify(revoked); err == nil || !strings.Contains(out, "revoked") {
		t.Errorf("openssl verify of the revoked certificate: %v\n%s", err, out)
	}
	if out, err := verify(live); err != nil {
		t.Errorf("openssl verify of a live certificate: %v\n%s", err, out)
	}
}

// BenchmarkBuild1M builds and signs a CRL of 1,000,000 entries and reports
// its size and the memory allocated per build.
func BenchmarkBuild1M(b *testing.B) {
	pki := testpki.New(b, "example.org")
	const n = 1_000_000
	var size int
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for b.Loop() {
		der, err := Build(Params{Issuer: pki.Intermediate, Signer: issuance.NewCRLSigner(pki.Intermediate, pki.IntermediateKey), Number: big.NewInt(1),
			ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour), Entries: n}, entries(n))
		if err != nil {
			b.Fatal(err)
		}
		size = len(der)
	}
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(size)/1e6, "MB-DER")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N)/1e6, "MB-alloc/op")
}
