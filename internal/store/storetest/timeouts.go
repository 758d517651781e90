package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// Call is one call of a store method, with arguments that make sense on
// any store, for tests that stall the database under a store and check
// that every method still returns in time (see CallAll).
type Call struct {
	Name string
	// Write is set for a call that writes: on SQLite, a write lock held
	// by another process stalls these and not the reads.
	Write bool
	Do    func(ctx context.Context) error
}

// Calls lists one call of every method of s that reaches the database
// (and of store.ACMEStore, if s has it), Close excepted.
func Calls(s store.Store) []Call {
	ev := func() *store.Event { return newEvent(store.ActionPolicyLoaded, "") }
	calls := []Call{
		{"RecordIssuance", true, func(ctx context.Context) error {
			return s.RecordIssuance(ctx, withToken(NewIssuance(1), newJTI()))
		}},
		{"RecordEvent", true, func(ctx context.Context) error { return s.RecordEvent(ctx, ev()) }},
		{"Revoke", true, func(ctx context.Context) error {
			return notFoundIsAnswer(0, s.Revoke(ctx, "0badc0de", 1, base, newEvent(store.ActionCertRevoked, "")))
		}},
		{"RevokeIdentity", true, func(ctx context.Context) error {
			_, err := s.RevokeIdentity(ctx, "spiffe://example.test/svc/0", 1, base, *newEvent(store.ActionCertRevoked, "spiffe://example.test/svc/0"))
			return err
		}},
		{"Deny", true, func(ctx context.Context) error {
			id := "spiffe://example.test/denied/" + newJTI()
			return s.Deny(ctx, id, newEvent(store.ActionIdentityDenied, id))
		}},
		{"Allow", true, func(ctx context.Context) error {
			return notFoundIsAnswer(0, s.Allow(ctx, "spiffe://example.test/allowed", newEvent(store.ActionIdentityAllowed, "spiffe://example.test/allowed")))
		}},
		{"AddCheckpoint", true, func(ctx context.Context) error {
			return s.AddCheckpoint(ctx, store.Checkpoint{Size: 1 << 40, Root: make([]byte, 32), Note: []byte("note"), Time: base})
		}},
		{"IsDenied", false, func(ctx context.Context) error { _, err := s.IsDenied(ctx, "spiffe://example.test/x"); return err }},
		{"DeniedIdentities", false, func(ctx context.Context) error { _, err := s.DeniedIdentities(ctx); return err }},
		{"RevokedCertificates", false, func(ctx context.Context) error {
			return s.RevokedCertificates(ctx, "", base, func(store.Revoked) error { return nil })
		}},
		{"LastEventSeq", false, func(ctx context.Context) error { _, err := s.LastEventSeq(ctx); return err }},
		{"Certificate", false, func(ctx context.Context) error { return notFoundIsAnswer(s.Certificate(ctx, "0badc0de")) }},
		{"CertificateByFingerprint", false, func(ctx context.Context) error {
			return notFoundIsAnswer(s.CertificateByFingerprint(ctx, "0badc0de"))
		}},
		{"ListCertificates", false, func(ctx context.Context) error { _, err := s.ListCertificates(ctx, store.Filter{}); return err }},
		{"CountCertificates", false, func(ctx context.Context) error { _, err := s.CountCertificates(ctx, store.Filter{}); return err }},
		{"CertificatesByExpiry", false, func(ctx context.Context) error { _, err := s.CertificatesByExpiry(ctx, base); return err }},
		{"ExpiringReport", false, func(ctx context.Context) error {
			_, err := s.ExpiringReport(ctx, store.ExpiringFilter{Now: base, Before: base.Add(time.Hour)})
			return err
		}},
		{"Events", false, func(ctx context.Context) error { _, err := s.Events(ctx, store.EventFilter{}); return err }},
		{"Leaves", false, func(ctx context.Context) error { _, err := s.Leaves(ctx, 0, 10); return err }},
		{"LeafHashes", false, func(ctx context.Context) error { _, err := s.LeafHashes(ctx, 0, 10); return err }},
		{"EventBySeq", false, func(ctx context.Context) error { return notFoundIsAnswer(s.EventBySeq(ctx, 1<<40)) }},
		{"LatestCheckpoint", false, func(ctx context.Context) error { return notFoundIsAnswer(s.LatestCheckpoint(ctx)) }},
		{"Checkpoints", false, func(ctx context.Context) error { _, err := s.Checkpoints(ctx, 0, 10); return err }},
		{"CertificateByToken", false, func(ctx context.Context) error { return notFoundIsAnswer(s.CertificateByToken(ctx, "none")) }},
		{"NumberCRL", true, func(ctx context.Context) error {
			_, err := s.NumberCRL(ctx, "issuer-a", base, func(store.Revoked) error { return nil })
			return err
		}},
		// Governance: the writes on records that do not exist fail with
		// ErrConflict, an answer from the database.
		{"CreateApproval", true, func(ctx context.Context) error {
			return s.CreateApproval(ctx, &store.Approval{ID: newJTI(), Action: "token.create", Params: []byte("{}"), Required: 1, Approvers: "admin",
				CreatedAt: base, ExpiresAt: base.Add(time.Hour)}, ev())
		}},
		{"Vote", true, func(ctx context.Context) error {
			return conflictIsAnswer(s.Vote(ctx, "none", store.Vote{Approver: "a", Approve: true, At: base}, ev()))
		}},
		{"SetApprovalStatus", true, func(ctx context.Context) error {
			return conflictIsAnswer(s.SetApprovalStatus(ctx, "none", store.ApprovalPending, store.ApprovalApproved, "", base, ev()))
		}},
		{"Approval", false, func(ctx context.Context) error { return notFoundIsAnswer(s.Approval(ctx, "none")) }},
		{"Approvals", false, func(ctx context.Context) error { _, err := s.Approvals(ctx, store.ApprovalFilter{}); return err }},
		{"CreateGrant", true, func(ctx context.Context) error {
			return s.CreateGrant(ctx, &store.RoleGrant{ID: newJTI(), Identity: "spiffe://example.test/x", Role: "operator",
				CreatedAt: base, ExpiresAt: base.Add(time.Hour)}, ev())
		}},
		{"RevokeGrant", true, func(ctx context.Context) error { return conflictIsAnswer(s.RevokeGrant(ctx, "none", base, ev())) }},
		{"Grants", false, func(ctx context.Context) error { _, err := s.Grants(ctx, "", base); return err }},
		{"ProposePolicy", true, func(ctx context.Context) error {
			return s.ProposePolicy(ctx, &store.PolicyVersion{Document: []byte("profiles: {}"), Hash: "00", CreatedAt: base}, ev())
		}},
		{"ActivatePolicy", true, func(ctx context.Context) error { return conflictIsAnswer(s.ActivatePolicy(ctx, 1<<40, base, ev())) }},
		{"RejectPolicy", true, func(ctx context.Context) error { return conflictIsAnswer(s.RejectPolicy(ctx, 1<<40, ev())) }},
		{"PolicyVersion", false, func(ctx context.Context) error { return notFoundIsAnswer(s.PolicyVersion(ctx, 1<<40)) }},
		{"ActivePolicy", false, func(ctx context.Context) error { return notFoundIsAnswer(s.ActivePolicy(ctx)) }},
		{"PolicyVersions", false, func(ctx context.Context) error { _, err := s.PolicyVersions(ctx, 10); return err }},
	}
	if a, ok := s.(store.ACMEStore); ok {
		calls = append(calls,
			Call{"CreateACME", true, func(ctx context.Context) error {
				return a.CreateACME(ctx, store.ACMERecord{Kind: store.ACMEAccount, ID: newJTI(), Status: "valid", Data: []byte("{}")})
			}},
			Call{"UpdateACME", true, func(ctx context.Context) error {
				return notFoundIsAnswer(0, a.UpdateACME(ctx, store.ACMERecord{Kind: store.ACMEOrder, ID: "none", Status: "ready", Data: []byte("{}")}, "pending", ""))
			}},
			Call{"UseACMENonce", true, func(ctx context.Context) error { return a.UseACMENonce(ctx, newJTI(), base.Add(time.Hour), base) }},
			Call{"ACMENonceKey", true, func(ctx context.Context) error { _, err := a.ACMENonceKey(ctx, 1, make([]byte, 32)); return err }},
			Call{"ACMEByID", false, func(ctx context.Context) error { return notFoundIsAnswer(a.ACMEByID(ctx, store.ACMEOrder, "none")) }},
			Call{"ACMEByLookup", false, func(ctx context.Context) error {
				return notFoundIsAnswer(a.ACMEByLookup(ctx, store.ACMEAccount, "none"))
			}},
			Call{"ACMEChildren", false, func(ctx context.Context) error {
				_, err := a.ACMEChildren(ctx, store.ACMEOrder, "none", 10)
				return err
			}},
			Call{"ACMEByStatus", false, func(ctx context.Context) error {
				_, err := a.ACMEByStatus(ctx, store.ACMEOrder, "processing", 10)
				return err
			}},
		)
	}
	return calls
}

// notFoundIsAnswer turns ErrNotFound, an answer from the database, into
// success, for calls whose record does not exist.
func notFoundIsAnswer[T any](_ T, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// conflictIsAnswer turns ErrConflict, an answer from the database, into
// success, for guarded writes whose record does not exist.
func conflictIsAnswer(err error) error {
	if errors.Is(err, store.ErrConflict) {
		return nil
	}
	return err
}

// CallAll makes calls at once and returns how each ended. A call that has
// not returned within wait fails t: the store's bound did not hold.
func CallAll(t *testing.T, calls []Call, wait time.Duration) []error {
	t.Helper()
	errs := make([]error, len(calls))
	var wg sync.WaitGroup
	for i, c := range calls {
		wg.Go(func() { errs[i] = c.Do(context.Background()) })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return errs
	case <-time.After(wait):
		t.Fatalf("store calls still running after %s: the store's timeout did not bound them", wait)
		return nil
	}
}

// CheckTimedOut checks that err is the store's answer to a database that
// did not answer within timeout: an error matching store.ErrTimeout and
// context.DeadlineExceeded that says what happened and what to check.
func CheckTimedOut(t *testing.T, name string, err error, timeout time.Duration, check string) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s succeeded on a database that does not answer", name)
	case !errors.Is(err, store.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded):
		t.Errorf("%s: %v; want an error matching store.ErrTimeout and context.DeadlineExceeded", name, err)
	case !strings.Contains(err.Error(), fmt.Sprintf("did not answer within %s", timeout)) || !strings.Contains(err.Error(), check):
		t.Errorf("%s: %q does not say that the database did not answer within %s and to %q", name, err, timeout, check)
	}
}
