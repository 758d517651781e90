package authority_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"net/netip"
	"sync"
	"testing"

	"github.com/mica-pki/mica/internal/auditlog"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
	"github.com/mica-pki/mica/internal/store"
)

type failure struct {
	source netip.Addr
	reason string
}

// auditFixture wires a real audit log and records the AuthFailed hook.
func auditFixture(t *testing.T) (*authoritytest.Fixture, *[]failure, *auditlog.Signer) {
	var mu sync.Mutex
	var failures []failure
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := auditlog.NewSigner("example.org/mica/audit", key)
	if err != nil {
		t.Fatal(err)
	}
	f := authoritytest.NewWith(t, func(cfg *authority.Config) {
		l, err := auditlog.New(auditlog.Config{Store: cfg.Store.(auditlog.Store), Signer: signer})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Audit = l
		cfg.AuthFailed = func(source netip.Addr, reason string) {
			mu.Lock()
			defer mu.Unlock()
			failures = append(failures, failure{source, reason})
		}
	})
	return f, &failures, signer
}

func TestAuthFailedHook(t *testing.T) {
	f, failures, _ := auditFixture(t)
	ctx := context.Background()
	src := netip.MustParseAddr("192.0.2.9")
	holder := f.Issue(t, "spiffe://example.org/billing/api")
	*failures = nil
	tests := []struct {
		name   string
		call   func() error
		reason string // "" means no failure reported
	}{
		{"GarbageToken", func() error {
			_, err := f.Authority.Enroll(ctx, authority.EnrollRequest{Token: "not-a-token", CSR: authoritytest.CSR(t), Source: src})
			return err
		}, "token-invalid"},
		{"NoCertificate", func() error {
			_, err := f.Authority.AuthenticateFrom(ctx, nil, src)
			return err
		}, "unauthenticated"},
		{"ForeignCertificate", func() error {
			other := authoritytest.New(t).Issue(t, "spiffe://example.org/billing/api")
			_, err := f.Authority.AuthenticateFrom(ctx, []*x509.Certificate{other.Certificate, other.Chain[0]}, src)
			return err
		}, "unauthenticated"},
		{"GoodCertificate", func() error {
			_, err := f.Authority.AuthenticateFrom(ctx, []*x509.Certificate{holder.Certificate, holder.Chain[0]}, src)
			return err
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			*failures = nil
			err := tc.call()
			if (err == nil) != (tc.reason == "") {
				t.Fatalf("error %v, want failure %q", err, tc.reason)
			}
			switch {
			case tc.reason == "" && len(*failures) != 0:
				t.Errorf("success reported as failures %v", *failures)
			case tc.reason != "" && (len(*failures) != 1 || (*failures)[0] != failure{src, tc.reason}):
				t.Errorf("hook got %v, want one %q from %v", *failures, tc.reason, src)
			}
		})
	}
}

func TestAuditReadsAndProofs(t *testing.T) {
	f, _, signer := auditFixture(t)
	ctx := context.Background()
	holder := f.Issue(t, "spiffe://example.org/billing/api")
	other := f.Issue(t, "spiffe://example.org/billing/other")
	if holder.LeafIndex <= 0 || other.LeafIndex <= holder.LeafIndex {
		t.Fatalf("leaf indexes %d, %d: want increasing positions after the admin's", holder.LeafIndex, other.LeafIndex)
	}
	workload := f.Principal(t, holder)
	if _, err := f.Authority.AuditLeaves(ctx, workload, 0, 0); authority.KindOf(err) != authority.KindForbidden {
		t.Errorf("a workload read the audit log: %v", err)
	}
	if _, err := f.Authority.AuditProof(ctx, workload, other.Record.Serial); authority.KindOf(err) != authority.KindForbidden {
		t.Errorf("a workload got another's proof: %v", err)
	}
	for _, p := range []authority.Principal{workload, f.Admin} {
		pr, err := f.Authority.AuditProof(ctx, p, holder.Record.Serial)
		if err != nil {
			t.Fatalf("AuditProof as %s: %v", p.Name, err)
		}
		cp, err := auditlog.OpenCheckpoint(pr.Checkpoint.Note, signer.VerifierKey())
		if err != nil {
			t.Fatal(err)
		}
		if pr.Event.LeafIndex != holder.LeafIndex {
			t.Errorf("proof for leaf %d, want %d", pr.Event.LeafIndex, holder.LeafIndex)
		}
		if err := auditlog.VerifyInclusion(&pr.Event, pr.Event.LeafIndex, cp, pr.Hashes); err != nil {
			t.Error(err)
		}
	}
	leaves, err := f.Authority.AuditLeaves(ctx, f.Admin, 0, 0)
	if err != nil || int64(len(leaves)) <= other.LeafIndex {
		t.Fatalf("AuditLeaves: %d leaves, %v", len(leaves), err)
	}
	evs, err := f.Authority.AuditEvents(ctx, f.Admin, store.EventFilter{Action: store.ActionCertIssued, Identity: "spiffe://example.org/billing/other"})
	if err != nil || len(evs) != 1 || evs[0].Serial != other.Record.Serial {
		t.Errorf("AuditEvents: %v, %v", evs, err)
	}
	cp, err := f.Authority.AuditCheckpoint(ctx, f.Admin)
	if err != nil || cp.Size != int64(len(leaves)) {
		t.Errorf("AuditCheckpoint: size %d (%v), want %d", cp.Size, err, len(leaves))
	}
}
