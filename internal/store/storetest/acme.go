package storetest

import (
	"context"
	"errors"
	"fmt"
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
			{"update missing", s.UpdateACME(ctx, store.ACMERecord{Kind: store.ACMEOrder, ID: "nope", Data: []byte(`{}`)}, "pending", ""), store.ErrNotFound},
			{"update from wrong status", s.UpdateACME(ctx, store.ACMERecord{Kind: store.ACMEOrder, ID: "o1", Parent: "a1", Status: "valid", Data: []byte(`{}`)}, "ready", ""), store.ErrConflict},
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
				if err := s.UpdateACME(ctx, up, "pending", ""); err == nil {
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
		if err := s.UpdateACME(ctx, up, "pending", ""); err != nil {
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
		if err := s.UpdateACME(ctx, clash, "valid", "thumb3"); !errors.Is(err, store.ErrConflict) {
			t.Errorf("UpdateACME onto a taken lookup key = %v, want ErrConflict", err)
		}
		if got, err := s.ACMEByID(ctx, store.ACMEAccount, "a3"); err != nil || got.Lookup != "thumb3" || got.Status != "valid" {
			t.Errorf("after a refused update read %+v, %v; want it unchanged", got, err)
		}
		// A key change (thumb3 → thumb4) commits; an update that still
		// expects the old lookup key (signed with the old key before the
		// change) must not write the old key back.
		rekeyed := clash
		rekeyed.Lookup, rekeyed.Status, rekeyed.Data = "thumb4", "valid", []byte(`{"k":4}`)
		if err := s.UpdateACME(ctx, rekeyed, "valid", "thumb3"); err != nil {
			t.Fatalf("key change: %v", err)
		}
		stale := clash
		stale.Lookup, stale.Status, stale.Data = "thumb3", "valid", []byte(`{"k":3,"contact":"x"}`)
		if err := s.UpdateACME(ctx, stale, "valid", "thumb3"); !errors.Is(err, store.ErrConflict) {
			t.Errorf("UpdateACME expecting a replaced lookup key = %v, want ErrConflict", err)
		}
		if got, err := s.ACMEByID(ctx, store.ACMEAccount, "a3"); err != nil || got.Lookup != "thumb4" || string(got.Data) != `{"k":4}` {
			t.Errorf("after a stale update read %+v, %v; want the key change kept", got, err)
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
		if err := s.UpdateACME(ctx, store.ACMERecord{Kind: bogus, ID: "x", Data: []byte(`{}`)}, "pending", ""); err == nil {
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

	t.Run("ByStatus", func(t *testing.T) {
		for _, id := range []string{"p2", "p1"} {
			if err := s.CreateACME(ctx, store.ACMERecord{Kind: store.ACMEOrder, ID: id, Parent: "a1", Status: "processing", Data: []byte(`{}`)}); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.ACMEByStatus(ctx, store.ACMEOrder, "processing", 0)
		if err != nil || len(got) != 2 || got[0].ID != "p1" || got[1].ID != "p2" || got[0].Parent != "a1" {
			t.Errorf("ACMEByStatus = %+v, %v; want p1, p2", got, err)
		}
		if got, err := s.ACMEByStatus(ctx, store.ACMEOrder, "processing", 1); err != nil || len(got) != 1 || got[0].ID != "p1" {
			t.Errorf("ACMEByStatus with limit 1 = %+v, %v; want p1", got, err)
		}
		if got, err := s.ACMEByStatus(ctx, store.ACMEOrder, "nonsense", 0); err != nil || len(got) != 0 {
			t.Errorf("ACMEByStatus of an unused status = %+v, %v; want none", got, err)
		}
		if _, err := s.ACMEByStatus(ctx, store.ACMEKind("bogus"), "processing", 0); err == nil {
			t.Error("ACMEByStatus of an unknown kind succeeded")
		}
	})

	t.Run("Nonces", func(t *testing.T) {
		tests := []struct {
			name, nonce string
			expires     time.Time
			want        error
		}{
			{"first use", "n1", now.Add(time.Minute), nil},
			{"replay", "n1", now.Add(time.Minute), store.ErrConflict},
			{"other nonce", "n2", now.Add(time.Minute), nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if err := s.UseACMENonce(ctx, tt.nonce, tt.expires, now); !errors.Is(err, tt.want) {
					t.Errorf("UseACMENonce(%s) = %v, want %v", tt.nonce, err, tt.want)
				}
			})
		}
		// Of many servers using one nonce at once, exactly one succeeds.
		var wins atomic.Int32
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				err := s.UseACMENonce(ctx, "raced", now.Add(time.Minute), now)
				if err == nil {
					wins.Add(1)
				} else if !errors.Is(err, store.ErrConflict) {
					t.Errorf("UseACMENonce: %v", err)
				}
			})
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Errorf("%d uses of one nonce succeeded, want 1", wins.Load())
		}
		// An expired record is swept within the next 64 uses: after them the
		// nonce can be recorded again (the ACME door refuses it by age).
		if err := s.UseACMENonce(ctx, "old", now.Add(-time.Second), now); err != nil {
			t.Fatal(err)
		}
		for i := range 64 {
			if err := s.UseACMENonce(ctx, fmt.Sprint("filler", i), now.Add(time.Minute), now); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.UseACMENonce(ctx, "old", now.Add(time.Minute), now); err != nil {
			t.Errorf("an expired nonce record was not swept after 64 uses: %v", err)
		}
		if err := s.UseACMENonce(ctx, "n2", now.Add(time.Minute), now); !errors.Is(err, store.ErrConflict) {
			t.Errorf("a live nonce record was swept: %v", err)
		}
	})

	t.Run("NonceKeys", func(t *testing.T) {
		k1 := []byte("key-of-epoch-100-0123456789abcdef")
		got, err := s.ACMENonceKey(ctx, 100, k1)
		if err != nil || string(got) != string(k1) {
			t.Fatalf("first ACMENonceKey(100) = %q, %v; want the fresh key", got, err)
		}
		// A second server with its own fresh key gets the stored one.
		if got, err := s.ACMENonceKey(ctx, 100, []byte("another")); err != nil || string(got) != string(k1) {
			t.Errorf("second ACMENonceKey(100) = %q, %v; want %q", got, err, k1)
		}
		// Many servers racing for a new epoch agree on one key.
		keys := make([]string, 8)
		var wg sync.WaitGroup
		for i := range keys {
			wg.Go(func() {
				k, err := s.ACMENonceKey(ctx, 101, []byte{byte(i), 1, 2, 3})
				if err != nil {
					t.Error(err)
				}
				keys[i] = string(k)
			})
		}
		wg.Wait()
		for _, k := range keys[1:] {
			if k != keys[0] {
				t.Fatalf("servers racing for epoch 101 got different keys: %q", keys)
			}
		}
		// Epoch 103's key forgets epoch 100's (before 103-2) and keeps 101's.
		if _, err := s.ACMENonceKey(ctx, 103, []byte("k103")); err != nil {
			t.Fatal(err)
		}
		if got, err := s.ACMENonceKey(ctx, 101, []byte("new")); err != nil || string(got) != keys[0] {
			t.Errorf("epoch 101 after 103 = %q, %v; want kept %q", got, err, keys[0])
		}
		if got, err := s.ACMENonceKey(ctx, 100, []byte("new")); err != nil || string(got) != "new" {
			t.Errorf("epoch 100 after 103 = %q, %v; want forgotten (a new key)", got, err)
		}
	})
}
