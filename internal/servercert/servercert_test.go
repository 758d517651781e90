package servercert

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/testpki"
)

// issuer signs real certificates with a test CA, valid from now for ttl,
// and fails while failing is above zero.
type issuer struct {
	pki *testpki.PKI
	ttl time.Duration

	mu      sync.Mutex
	calls   int
	failing int
}

func (i *issuer) IssueInternal(_ context.Context, profile string, id identity.Identity, pub crypto.PublicKey, ttl time.Duration) (*authority.Issued, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.calls++
	if i.failing > 0 {
		i.failing--
		return nil, errors.New("the store is away")
	}
	now := time.Now()
	cert, err := i.pki.Issuer.Issue(issuance.Request{PublicKey: pub, Identity: id, NotBefore: now, NotAfter: now.Add(i.ttl),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return nil, err
	}
	return &authority.Issued{Certificate: cert, Chain: []*x509.Certificate{i.pki.Intermediate}}, nil
}

func (i *issuer) count() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.calls
}

func TestRenewsOnTheSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pki := testpki.New(t, "example.org", testpki.WithClock(time.Now))
		id, err := identity.Parse("localhost,127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		iss := &issuer{pki: pki, ttl: 90 * time.Minute}
		// Rand 0.5 puts renewal exactly at two thirds of the life, and the
		// backoff halfway between its fixed and random halves.
		c, err := New(context.Background(), Config{Issuer: iss, Profile: "mica-server", Identity: id, Rand: func() float64 { return 0.5 }})
		if err != nil {
			t.Fatal(err)
		}
		first := c.Leaf()
		if iss.count() != 1 || first == nil {
			t.Fatalf("New: %d issuances", iss.count())
		}
		if got, _ := c.GetCertificate(nil); got.Leaf != first || len(got.Certificate) != 2 {
			t.Fatalf("GetCertificate does not serve the leaf and its chain")
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()

		time.Sleep(60*time.Minute - time.Second)
		synctest.Wait()
		if iss.count() != 1 {
			t.Fatalf("renewed before two thirds of the life: %d issuances", iss.count())
		}
		iss.mu.Lock()
		iss.failing = 2
		iss.mu.Unlock()
		time.Sleep(1500 * time.Millisecond) // two thirds + 0.5s
		synctest.Wait()
		if iss.count() != 2 || c.Leaf() != first {
			t.Fatalf("at two thirds: %d issuances (want 2, the first failing), leaf changed %v", iss.count(), c.Leaf() != first)
		}
		// Backoff: 0.75s, then 1.5s.
		time.Sleep(500 * time.Millisecond) // two thirds + 1s
		synctest.Wait()
		if iss.count() != 3 || c.Leaf() != first {
			t.Fatalf("first retry: %d issuances, want 3 with the old leaf still served", iss.count())
		}
		time.Sleep(1500 * time.Millisecond) // two thirds + 2.5s
		synctest.Wait()
		if iss.count() != 4 || c.Leaf() == first {
			t.Fatalf("second retry: %d issuances, want 4 and a new leaf", iss.count())
		}
		renewed := c.Leaf()
		if renewed.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(first.PublicKey) {
			t.Error("the renewed certificate kept the old key")
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run after cancel: %v", err)
		}
	})
}

func TestNewFails(t *testing.T) {
	pki := testpki.New(t, "example.org")
	id, _ := identity.Parse("localhost")
	if _, err := New(context.Background(), Config{Issuer: &issuer{pki: pki, ttl: time.Hour, failing: 1}, Profile: "mica-server", Identity: id}); err == nil {
		t.Fatal("New with a failing issuer: no error")
	}
	if _, err := New(context.Background(), Config{Issuer: &issuer{pki: pki, ttl: time.Hour}, Profile: "mica-server"}); err == nil {
		t.Fatal("New without names: no error")
	}
}
