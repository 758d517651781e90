package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/auditlog/leaf"
	"github.com/mica-pki/mica/internal/store"
)

// checkLeaves reads every leaf and checks the audit log's promises:
// indexes contiguous from 0, in seq order, each hash that of its event.
func checkLeaves(t *testing.T, s store.Store, want int) []store.Event {
	t.Helper()
	ctx := context.Background()
	var all []store.Event
	for {
		page, err := s.Leaves(ctx, int64(len(all)), 1000)
		if err != nil {
			t.Fatalf("Leaves: %v", err)
		}
		all = append(all, page...)
		if len(page) < 1000 {
			break
		}
	}
	if len(all) != want {
		t.Fatalf("%d leaves, want %d", len(all), want)
	}
	hashes, err := s.LeafHashes(ctx, 0, 10000)
	if err != nil {
		t.Fatalf("LeafHashes: %v", err)
	}
	for i, ev := range all {
		switch {
		case ev.LeafIndex != int64(i):
			t.Fatalf("leaf %d has LeafIndex %d", i, ev.LeafIndex)
		case i > 0 && ev.Seq <= all[i-1].Seq:
			t.Fatalf("leaf %d has seq %d after seq %d: leaf order is not commit order", i, ev.Seq, all[i-1].Seq)
		case !bytes.Equal(ev.LeafHash, leaf.Hash(&ev)):
			t.Fatalf("leaf %d: stored hash is not the hash of its event", i)
		case i < len(hashes) && !bytes.Equal(hashes[i], ev.LeafHash):
			t.Fatalf("LeafHashes[%d] differs from Leaves", i)
		}
	}
	return all
}

func testAuditLeaves(t *testing.T, open Opener) {
	s := openStore(t, open)
	ctx := context.Background()
	var want []int64
	for i := range 5 {
		iss := NewIssuance(i)
		if err := s.RecordIssuance(ctx, iss); err != nil {
			t.Fatal(err)
		}
		want = append(want, iss.Event.LeafIndex)
		// A refused item takes no leaf index.
		if err := s.RecordIssuance(ctx, &store.Issuance{Certificate: iss.Certificate, Event: iss.Event}); err == nil {
			t.Fatal("duplicate issuance recorded")
		}
		ev := newEvent(store.ActionTokenCreated, "spiffe://example.test/x")
		if err := s.RecordEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
		want = append(want, ev.LeafIndex)
	}
	iss := NewIssuance(9)
	if err := s.RecordIssuance(ctx, iss); err != nil {
		t.Fatal(err)
	}
	ev := newEvent(store.ActionCertRevoked, iss.Certificate.Identity)
	if err := s.Revoke(ctx, iss.Certificate.Serial, 1, base, ev); err != nil {
		t.Fatal(err)
	}
	want = append(want, iss.Event.LeafIndex, ev.LeafIndex)
	// Revoking an identity writes one event per certificate inside the
	// transaction; deny and allow one each. All are leaves like any other.
	id := "spiffe://example.test/audit/many"
	for i := range 3 {
		iss := NewIssuance(20 + i)
		iss.Certificate.Identity = id
		if err := s.RecordIssuance(ctx, iss); err != nil {
			t.Fatal(err)
		}
		want = append(want, iss.Event.LeafIndex)
	}
	revoked, err := s.RevokeIdentity(ctx, id, 4, base, store.Event{Time: base, Actor: "admin", Action: store.ActionCertRevoked, Identity: id, Outcome: "ok"})
	if err != nil || len(revoked) != 3 {
		t.Fatalf("RevokeIdentity: %d events, %v", len(revoked), err)
	}
	for _, ev := range revoked {
		want = append(want, ev.LeafIndex)
	}
	deny := newEvent(store.ActionIdentityDenied, id)
	if err := s.Deny(ctx, id, deny); err != nil {
		t.Fatal(err)
	}
	allow := newEvent(store.ActionIdentityAllowed, id)
	if err := s.Allow(ctx, id, allow); err != nil {
		t.Fatal(err)
	}
	want = append(want, deny.LeafIndex, allow.LeafIndex)
	for i, idx := range want {
		if idx != int64(i) {
			t.Fatalf("leaf indexes returned to callers = %v, want 0..%d", want, len(want)-1)
		}
	}
	all := checkLeaves(t, s, len(want))
	got, err := s.EventBySeq(ctx, all[3].Seq)
	if err != nil {
		t.Fatal(err)
	}
	if msg := sameEvent(got, all[3]); msg != "" {
		t.Errorf("EventBySeq: %s", msg)
	}
	if _, err := s.EventBySeq(ctx, 1<<40); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("EventBySeq(missing) = %v, want ErrNotFound", err)
	}
	if page, err := s.Leaves(ctx, 10, 2); err != nil || len(page) != 2 || page[0].LeafIndex != 10 {
		t.Errorf("Leaves(10, 2) = %d leaves, %v; want leaves 10 and 11", len(page), err)
	}
	if _, err := s.Leaves(ctx, -1, 0); err == nil {
		t.Error("Leaves(-1) succeeded")
	}
}

// testAuditTwoStores is two servers on one database appending at once:
// the log must stay one sequence, contiguous and in commit order.
func testAuditTwoStores(t *testing.T, open Opener) {
	a := openStore(t, open)
	b := openStore(t, open)
	ctx := context.Background()
	const perWriter = 100
	var wg sync.WaitGroup
	for w, s := range []store.Store{a, b, a, b} {
		wg.Go(func() {
			for i := range perWriter {
				var err error
				if i%2 == 0 {
					err = s.RecordIssuance(ctx, NewIssuance(w*perWriter+i))
				} else {
					err = s.RecordEvent(ctx, newEvent(store.ActionTokenCreated, fmt.Sprintf("spiffe://example.test/w/%d", w)))
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	checkLeaves(t, a, 4*perWriter)
}

func testCheckpoints(t *testing.T, open Opener) {
	s := openStore(t, open)
	ctx := context.Background()
	if _, err := s.LatestCheckpoint(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("LatestCheckpoint on an empty store = %v, want ErrNotFound", err)
	}
	for _, size := range []int64{3, 1, 7, 5} {
		c := store.Checkpoint{Size: size, Root: bytes.Repeat([]byte{byte(size)}, 32), Note: []byte(fmt.Sprintf("note %d\n", size)), Time: base.Add(time.Duration(size) * time.Second)}
		if err := s.AddCheckpoint(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	// A second server signing the same size stores nothing new.
	if err := s.AddCheckpoint(ctx, store.Checkpoint{Size: 7, Root: make([]byte, 32), Note: []byte("other"), Time: base}); err != nil {
		t.Fatal(err)
	}
	latest, err := s.LatestCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if latest.Size != 7 || string(latest.Note) != "note 7\n" || !latest.Time.Equal(base.Add(7*time.Second)) {
		t.Errorf("LatestCheckpoint = size %d note %q at %v, want the first size-7 checkpoint", latest.Size, latest.Note, latest.Time)
	}
	tests := []struct {
		name  string
		after int64
		limit int
		want  []int64
	}{
		{"All", 0, 0, []int64{1, 3, 5, 7}},
		{"After", 3, 0, []int64{5, 7}},
		{"Limit", 0, 2, []int64{1, 3}},
		{"None", 7, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs, err := s.Checkpoints(ctx, tc.after, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			var got []int64
			for _, c := range cs {
				got = append(got, c.Size)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("sizes %v, want %v", got, tc.want)
			}
		})
	}
}
