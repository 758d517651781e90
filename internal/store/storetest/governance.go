package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

func govEvent(what string) *store.Event {
	return &store.Event{Time: base, Actor: "spiffe://example.test/mica/admin/a", Action: store.Action(what), Outcome: "ok", Detail: what}
}

// testGovernance: approvals, votes, grants and policy versions, each change
// with its audit leaf, conflicts refused alone, and two stores on one
// database agreeing.
func testGovernance(t *testing.T, open Opener) {
	s := openStore(t, open)
	ctx := context.Background()

	t.Run("Approvals", func(t *testing.T) {
		a := &store.Approval{ID: "req1", Action: "cert.revoke", Params: []byte(`{"serial":"1a"}`), ParamsHash: "ab",
			Requester: "alice", Reason: "r", Required: 2, Approvers: "admin", CreatedAt: base, ExpiresAt: base.Add(time.Hour)}
		ev := govEvent("approval.requested")
		if err := s.CreateApproval(ctx, a, ev); err != nil {
			t.Fatal(err)
		}
		if ev.Seq == 0 || ev.LeafIndex < 0 {
			t.Fatalf("the request's event was not recorded: %+v", ev)
		}
		if err := s.CreateApproval(ctx, a, govEvent("approval.requested")); !errors.Is(err, store.ErrConflict) {
			t.Errorf("same id twice: %v, want ErrConflict", err)
		}
		if err := s.Vote(ctx, "req1", store.Vote{Approver: "bob", Approve: true, At: base.Add(time.Minute)}, govEvent("approval.approved")); err != nil {
			t.Fatal(err)
		}
		if err := s.Vote(ctx, "req1", store.Vote{Approver: "bob", Approve: true, At: base.Add(2 * time.Minute)}, govEvent("approval.approved")); !errors.Is(err, store.ErrConflict) {
			t.Errorf("second vote by the same approver: %v, want ErrConflict", err)
		}
		if err := s.Vote(ctx, "nope", store.Vote{Approver: "bob", Approve: true, At: base}, govEvent("approval.approved")); !errors.Is(err, store.ErrConflict) {
			t.Errorf("vote on an unknown request: %v, want ErrConflict", err)
		}
		got, err := s.Approval(ctx, "req1")
		if err != nil || got.Status != store.ApprovalPending || len(got.Votes) != 1 || got.Votes[0].Approver != "bob" || !got.Votes[0].Approve ||
			string(got.Params) != `{"serial":"1a"}` || !got.ExpiresAt.Equal(a.ExpiresAt) {
			t.Fatalf("Approval = %+v, %v", got, err)
		}
		if err := s.SetApprovalStatus(ctx, "req1", store.ApprovalPending, store.ApprovalApproved, "", base.Add(3*time.Minute), govEvent("approval.approved")); err != nil {
			t.Fatal(err)
		}
		// Votes stop when the request is no longer pending; status moves
		// are compare-and-swap.
		if err := s.Vote(ctx, "req1", store.Vote{Approver: "carol", Approve: true, At: base}, govEvent("approval.approved")); !errors.Is(err, store.ErrConflict) {
			t.Errorf("vote on a decided request: %v, want ErrConflict", err)
		}
		if err := s.SetApprovalStatus(ctx, "req1", store.ApprovalPending, store.ApprovalRejected, "", base, govEvent("approval.rejected")); !errors.Is(err, store.ErrConflict) {
			t.Errorf("stale status move: %v, want ErrConflict", err)
		}
		if _, err := s.Approval(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("unknown request: %v, want ErrNotFound", err)
		}
		list, err := s.Approvals(ctx, store.ApprovalFilter{Status: store.ApprovalApproved})
		if err != nil || len(list) != 1 || list[0].ID != "req1" {
			t.Errorf("Approvals(approved) = %+v, %v", list, err)
		}
	})

	t.Run("ExecuteOnceAcrossStores", func(t *testing.T) {
		other := openStore(t, open)
		a := &store.Approval{ID: "once", Action: "x", Params: []byte(`{}`), ParamsHash: "h", Requester: "alice", Required: 1,
			Approvers: "admin", CreatedAt: base, ExpiresAt: base.Add(time.Hour)}
		if err := s.CreateApproval(ctx, a, govEvent("approval.requested")); err != nil {
			t.Fatal(err)
		}
		if err := s.SetApprovalStatus(ctx, "once", store.ApprovalPending, store.ApprovalApproved, "", base, govEvent("approval.approved")); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wins := make(chan int, 8)
		for i := range 8 {
			st := []store.Store{s, other}[i%2]
			wg.Go(func() {
				if err := st.SetApprovalStatus(ctx, "once", store.ApprovalApproved, store.ApprovalExecuted, fmt.Sprint(i), base, govEvent("approval.executed")); err == nil {
					wins <- i
				} else if !errors.Is(err, store.ErrConflict) {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		close(wins)
		if n := len(wins); n != 1 {
			t.Fatalf("%d executions won, want exactly 1", n)
		}
	})

	t.Run("Grants", func(t *testing.T) {
		g := &store.RoleGrant{ID: "g1", Identity: "spiffe://example.test/mica/admin/b", Role: "operator", GrantedBy: "alice",
			Reason: "on call", CreatedAt: base, ExpiresAt: base.Add(2 * time.Hour)}
		if err := s.CreateGrant(ctx, g, govEvent("role.granted")); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			at   time.Time
			want int
		}{{base.Add(time.Hour), 1}, {base.Add(3 * time.Hour), 0}, {base.Add(-time.Minute), 0}, {time.Time{}, 1}} {
			got, err := s.Grants(ctx, g.Identity, tc.at)
			if err != nil || len(got) != tc.want {
				t.Errorf("Grants at %v = %d, %v; want %d", tc.at, len(got), err, tc.want)
			}
		}
		if err := s.RevokeGrant(ctx, "g1", base.Add(time.Minute), govEvent("role.revoked")); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Grants(ctx, g.Identity, base.Add(time.Hour)); len(got) != 0 {
			t.Errorf("a revoked grant is still in force: %+v", got)
		}
		if err := s.RevokeGrant(ctx, "g1", base, govEvent("role.revoked")); !errors.Is(err, store.ErrConflict) {
			t.Errorf("revoking twice: %v, want ErrConflict", err)
		}
	})

	t.Run("PolicyVersions", func(t *testing.T) {
		if _, err := s.ActivePolicy(ctx); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("ActivePolicy before any: %v, want ErrNotFound", err)
		}
		v1 := &store.PolicyVersion{Document: []byte("profiles: {a: {}}"), Hash: "h1", ProposedBy: "alice", CreatedAt: base}
		v2 := &store.PolicyVersion{Document: []byte("profiles: {b: {}}"), Hash: "h2", ProposedBy: "alice", CreatedAt: base}
		for _, v := range []*store.PolicyVersion{v1, v2} {
			if err := s.ProposePolicy(ctx, v, govEvent("policy.proposed")); err != nil {
				t.Fatal(err)
			}
		}
		if v1.Version != 1 || v2.Version != 2 {
			t.Fatalf("versions %d, %d; want 1, 2", v1.Version, v2.Version)
		}
		for _, v := range []int64{1, 2, 1} {
			if err := s.ActivatePolicy(ctx, v, base.Add(time.Minute), govEvent("policy.activated")); err != nil {
				t.Fatalf("activate %d: %v", v, err)
			}
			act, err := s.ActivePolicy(ctx)
			if err != nil || act.Version != v || act.Status != store.PolicyActive {
				t.Fatalf("after activating %d: active %+v, %v", v, act, err)
			}
		}
		if err := s.ActivatePolicy(ctx, 9, base, govEvent("policy.activated")); !errors.Is(err, store.ErrConflict) {
			t.Errorf("activating an unknown version: %v, want ErrConflict", err)
		}
		list, err := s.PolicyVersions(ctx, 10)
		if err != nil || len(list) != 2 || list[0].Version != 2 || list[0].Status != store.PolicySuperseded {
			t.Errorf("PolicyVersions = %+v, %v", list, err)
		}
		got, err := s.PolicyVersion(ctx, 2)
		if err != nil || string(got.Document) != "profiles: {b: {}}" {
			t.Errorf("PolicyVersion(2) = %+v, %v", got, err)
		}
	})

	// Every change above is an audit leaf, contiguous.
	checkLeaves(t, s, len(allEvents(t, s)))
}
