package storetest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// testACME checks the ACME door's state: records round-trip, lookups are
// unique, updates are compare-and-swap, and a nonce is good exactly once.
func testACME(t *testing.T, open Opener) {
	h := openStore(t, open)
	s, ok := h.Store.(store.ACMEStore)
	if !ok {
		t.Fatalf("%T does not implement store.ACMEStore", h.Store)
	}
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	acct := store.ACMERecord{Kind: store.ACMEAccount, ID: "a1", Lookup: "thumb1", Status: "valid", Data: []byte(`{"k":1}`)}
	order := store.ACMERecord{Kind: store.ACMEOrder, ID: "o1", Parent: "a1", Status: "pending", Expires: now.Add(time.Hour), Data: []byte(`{}`)}
	authz := store.ACMERecord{Kind: store.ACMEAuthorization, ID: "z1", Parent: "a1", Status: "pending", Expires: now.Add(time.Hour), Data: []byte(`{}`)}
	chall := store.ACMERecord{Kind: store.ACMEChallenge, ID: "c1", Parent: "z1", Status: "pending", Data: []byte(`{}`)}
	if err := s.CreateACME(ctx, acct); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateACME(ctx, order, authz, chall); err != nil {
		t.Fatal(err)
	}

	t.Run("RoundTrip", func(t *testing.T) {
		for _, want := range []store.ACMERecord{acct, order, authz, chall} {
			got, err := s.ACMEByID(ctx, want.Kind, want.ID)
			if err != nil {
				t.Fatalf("%s %s: %v", want.Kind, want.ID, err)
			}
			if got.ID != want.ID || got.Parent != want.Parent || got.Lookup != want.Lookup || got.Status != want.Status ||
				!got.Expires.Equal(want.Expires) || string(got.Data) != string(want.Data) {
				t.Errorf("read back %+v, want %+v", got, want)
			}
		}
		got, err := s.ACMEByLookup(ctx, store.ACMEAccount, "thumb1")
		if err != nil || got.ID != "a1" {
			t.Errorf("ACMEByLookup = %+v, %v", got, err)
		}
	})

	t.Run("Errors", func(t *testing.T) {
		tests := []struct {
			name string
			err  error
			want error
		}{
			{"duplicate ID", s.CreateACME(ctx, store.ACMERecord{Kind: store.ACMEOrder, ID: "o1", Data: []byte(`{}`)}), store.ErrConflict},
			{"duplicate lookup", s.CreateACME(ctx, store.ACMERecord{Kind: store.ACMEAccount, ID: "a2", Lookup: "thumb1", Data: []byte(`{}`)}), store.ErrConflict},
			{"missing ID", func() error { _, err := s.ACMEByID(ctx, store.ACMEOrder, "nope"); return err }(), store.ErrNotFound},
			{"missing lookup", func() error { _, err := s.ACMEByLookup(ctx, store.ACMEAccount, "nope"); return err }(), store.ErrNotFound},
			{"update missing", s.UpdateACME(ctx, store.ACMERecord{Kind: store.ACMEOrder, ID: "nope", Data: []byte(`{}`)}, "pending"), store.ErrNotFound},
			{"update from wrong status", s.UpdateACME(ctx, store.ACMERecord{Kind: store.ACMEOrder, ID: "o1", Parent: "a1", Status: "valid", Data: []byte(`{}`)}, "ready"), store.ErrConflict},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if !errors.Is(tt.err, tt.want) {
					t.Errorf("got %v, want %v", tt.err, tt.want)
				}
			})
		}
		// The failed batch wrote nothing.
		if _, err := s.ACMEByID(ctx, store.ACMEAccount, "a2"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("account a2 exists after a refused create: %v", err)
		}
	})

	t.Run("CompareAndSwap", func(t *testing.T) {
		// Of many concurrent moves from pending, exactly one wins.
		var wins atomic.Int32
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				up := order
				up.Status = "ready"
				if err := s.UpdateACME(ctx, up, "pending"); err == nil {
					wins.Add(1)
				} else if !errors.Is(err, store.ErrConflict) {
					t.Errorf("UpdateACME: %v", err)
				}
			})
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Errorf("%d updates from pending succeeded, want 1", wins.Load())
		}
	})

	t.Run("Update", func(t *testing.T) {
		up := store.ACMERecord{Kind: store.ACMEAuthorization, ID: "z1", Parent: "a1", Lookup: "z1-lookup", Status: "valid",
			Expires: now.Add(2 * time.Hour), Data: []byte(`{"v":2}`)}
		if err := s.UpdateACME(ctx, up, "pending"); err != nil {
			t.Fatal(err)
		}
		got, err := s.ACMEByID(ctx, store.ACMEAuthorization, "z1")
		if err != nil || got.Lookup != up.Lookup || got.Status != up.Status || !got.Expires.Equal(up.Expires) || string(got.Data) != string(up.Data) {
			t.Errorf("after UpdateACME read %+v, %v; want %+v", got, err, up)
		}
		// Taking another record's lookup key is a conflict and changes nothing.
		clash := acct
		clash.ID, clash.Lookup = "a3", "thumb3"
		if err := s.CreateACME(ctx, clash); err != nil {
			t.Fatal(err)
		}
		clash.Lookup, clash.Status = "thumb1", "deactivated"
		if err := s.UpdateACME(ctx, clash, "valid"); !errors.Is(err, store.ErrConflict) {
			t.Errorf("UpdateACME onto a taken lookup key = %v, want ErrConflict", err)
		}
		if got, err := s.ACMEByID(ctx, store.ACMEAccount, "a3"); err != nil || got.Lookup != "thumb3" || got.Status != "valid" {
			t.Errorf("after a refused update read %+v, %v; want it unchanged", got, err)
		}
	})

	t.Run("BadQueries", func(t *testing.T) {
		if _, err := s.ACMEByLookup(ctx, store.ACMEOrder, ""); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("ACMEByLookup with an empty key = %v, want ErrNotFound", err)
		}
		const bogus = store.ACMEKind("bogus")
		if _, err := s.ACMEByID(ctx, bogus, "a1"); err == nil || errors.Is(err, store.ErrNotFound) {
			t.Errorf("ACMEByID of an unknown kind = %v, want an error naming the kind", err)
		}
		if err := s.CreateACME(ctx, store.ACMERecord{Kind: bogus, ID: "x", Data: []byte(`{}`)}); err == nil {
			t.Error("CreateACME of an unknown kind succeeded")
		}
		if err := s.UpdateACME(ctx, store.ACMERecord{Kind: bogus, ID: "x", Data: []byte(`{}`)}, "pending"); err == nil {
			t.Error("UpdateACME of an unknown kind succeeded")
		}
		if _, err := s.ACMEChildren(ctx, bogus, "a1", 0); err == nil {
			t.Error("ACMEChildren of an unknown kind succeeded")
		}
	})

	t.Run("Children", func(t *testing.T) {
		if err := s.CreateACME(ctx, store.ACMERecord{Kind: store.ACMEOrder, ID: "o2", Parent: "a1", Status: "pending", Data: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
		got, err := s.ACMEChildren(ctx, store.ACMEOrder, "a1", 0)
		if err != nil || len(got) != 2 || got[0].ID != "o1" || got[1].ID != "o2" {
			t.Errorf("ACMEChildren = %+v, %v; want o1, o2", got, err)
		}
		if got, err := s.ACMEChildren(ctx, store.ACMEOrder, "a1", 1); err != nil || len(got) != 1 || got[0].ID != "o1" {
			t.Errorf("ACMEChildren with limit 1 = %+v, %v; want o1", got, err)
		}
	})

	t.Run("Nonces", func(t *testing.T) {
		if err := s.AddACMENonce(ctx, "n1", now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if err := s.AddACMENonce(ctx, "n2", now.Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name, nonce string
			want        error
		}{
			{"fresh", "n1", nil},
			{"reused", "n1", store.ErrNotFound},
			{"expired", "n2", store.ErrNotFound},
			{"unknown", "n3", store.ErrNotFound},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if err := s.UseACMENonce(ctx, tt.nonce, now); !errors.Is(err, tt.want) {
					t.Errorf("UseACMENonce(%s) = %v, want %v", tt.nonce, err, tt.want)
				}
			})
		}
	})
}
