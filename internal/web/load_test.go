package web_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/testpki"
)

// The loader writes certificates straight into a store, as fast as the
// store takes them: real certificates signed by the fixture's intermediate
// (one key pair for all of them, so signing is the only cost), each with
// its issuance event through RecordIssuance, many at once so that group
// commit batches them. It spreads them over the profiles, owners and the
// next four months the way a fleet looks: mesh workloads live a day,
// services weeks, web servers months; about 1% are revoked.

// fleet is one kind of workload in the loaded inventory.
type fleet struct {
	profile string
	share   int // of 100
	life    time.Duration
	name    func(i int) string
}

var fleets = []fleet{
	{"mesh", 55, 24 * time.Hour, func(i int) string { return fmt.Sprintf("spiffe://example.org/ns/team-%d/sa/svc-%d", i%40, i) }},
	{"service", 20, 30 * 24 * time.Hour, func(i int) string { return fmt.Sprintf("spiffe://example.org/billing/api-%d", i) }},
	{"db", 10, 60 * 24 * time.Hour, func(i int) string { return fmt.Sprintf("spiffe://example.org/db/replica-%d", i) }},
	{"batch", 8, 14 * 24 * time.Hour, func(i int) string { return fmt.Sprintf("spiffe://example.org/batch/job-%d", i) }},
	{"web", 7, 90 * 24 * time.Hour, func(i int) string { return fmt.Sprintf("web-%d.svc.example.org", i) }},
}

var owners = []string{
	"spiffe://example.org/mica/admin/alice", "spiffe://example.org/mica/admin/bob", "spiffe://example.org/mica/admin/carol",
	"spiffe://example.org/mica/admin/dan", "acme:https://127.0.0.1:8443/acme/acct/7",
}

// loaded says what load wrote: how many certificates it revoked, and a
// sample of the certificates (one in a thousand, at least ten).
type loaded struct {
	revoked int
	mu      sync.Mutex
	sample  []store.Certificate
}

// load writes certificates from to n-1 (their names follow the index)
// into st, signed by pki, valid around now.
func load(tb testing.TB, st store.Store, pki *testpki.PKI, from, n int, now time.Time) *loaded {
	tb.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	issuerFP := authority.Fingerprint(pki.Intermediate.Raw)
	ctx := context.Background()
	var next, revoked atomic.Int64
	next.Store(int64(from))
	out := &loaded{}
	every := max(1, min(1000, n/10))
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	workers := runtime.GOMAXPROCS(0) * 16 // most wait for the group commit
	for range workers {
		wg.Go(func() {
			rng := mrand.New(mrand.NewPCG(mrand.Uint64(), mrand.Uint64()))
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				iss, err := loadOne(i, rng, key, pki, issuerFP, now)
				if err == nil {
					err = retry(ctx, st, iss.Certificate.Serial, func() error { return st.RecordIssuance(ctx, iss) })
				}
				if err == nil && i%every == 0 {
					c := iss.Certificate
					c.DER = nil
					out.mu.Lock()
					out.sample = append(out.sample, c)
					out.mu.Unlock()
				}
				if err == nil && i%97 == 3 {
					ev := store.Event{Time: now, Actor: owners[0], Action: store.ActionCertRevoked, Serial: iss.Certificate.Serial,
						Identity: iss.Certificate.Identity, Profile: iss.Certificate.Profile, Outcome: "ok", Detail: "reason 4"}
					if err = st.Revoke(ctx, iss.Certificate.Serial, 4, now, &ev); err == nil {
						revoked.Add(1)
					}
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		tb.Fatalf("loading certificates: %v", err)
	default:
	}
	out.revoked = int(revoked.Load())
	return out
}

func loadOne(i int, rng *mrand.Rand, key *ecdsa.PrivateKey, pki *testpki.PKI, issuerFP string, now time.Time) (*store.Issuance, error) {
	pick := i % 100
	f := fleets[0]
	for _, x := range fleets {
		if pick < x.share {
			f = x
			break
		}
		pick -= x.share
	}
	name := f.name(i)
	id, err := identity.Parse(name)
	if err != nil {
		return nil, err
	}
	// Issued some time in the last lifetime, so expiries spread evenly
	// over the next one.
	notBefore := now.Add(-time.Duration(rng.Int64N(int64(f.life)))).Truncate(time.Second)
	notAfter := notBefore.Add(f.life)
	serial := new(big.Int).SetBytes(randomBytes(rng, 16))
	serial.SetBit(serial, 127, 0)
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{}, NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
	if !id.SPIFFE.IsZero() {
		u, _ := url.Parse(id.SPIFFE.String())
		tmpl.URIs = []*url.URL{u}
	}
	tmpl.DNSNames = id.DNS
	der, err := x509.CreateCertificate(rand.Reader, tmpl, pki.Intermediate, &key.PublicKey, pki.IntermediateKey)
	if err != nil {
		return nil, err
	}
	owner := owners[i%len(owners)]
	rec := store.Certificate{Serial: fmt.Sprintf("%x", serial), Fingerprint: authority.Fingerprint(der), Identity: id.Primary(),
		SANs: sans(id), Profile: f.profile, Requester: owner, Owner: owner, SourceAddr: "10.0.0.7", NotBefore: notBefore,
		NotAfter: notAfter, Issuer: issuerFP, Status: store.StatusActive, DER: der, ChainStartedAt: notBefore}
	return &store.Issuance{Certificate: rec, Event: store.Event{Time: notBefore, Actor: owner, Action: store.ActionCertIssued,
		Serial: rec.Serial, Fingerprint: rec.Fingerprint, Identity: rec.Identity, Profile: rec.Profile, Outcome: "ok"}}, nil
}

func randomBytes(rng *mrand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func sans(id identity.Identity) []string {
	var out []string
	for _, n := range id.Names() {
		out = append(out, n.String())
	}
	return out
}

// retry writes again a write that timed out on a busy machine, unless it
// committed after all (the store says a timed-out write may have).
func retry(ctx context.Context, st store.Store, serial string, write func() error) error {
	var err error
	for range 5 {
		if err = write(); err == nil || !strings.Contains(err.Error(), "did not answer") {
			return err
		}
		if _, rerr := st.Certificate(ctx, serial); rerr == nil {
			return nil
		}
	}
	return err
}
