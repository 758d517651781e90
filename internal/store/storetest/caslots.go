package storetest

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

func slotEvent(what store.Action) *store.Event {
	return &store.Event{Time: base, Actor: "system", Action: what, Outcome: "ok", Detail: string(what)}
}

func slot(kind store.SlotKind, state store.SlotState, name string, parent int64) *store.CASlot {
	return &store.CASlot{Kind: kind, State: state, Cert: []byte("der of " + name), Fingerprint: "fp-" + name, Parent: parent,
		NotBefore: base, NotAfter: base.Add(24 * time.Hour), PreparedAt: base}
}

// testCASlots: the CA rotation's state machine as the store keeps it —
// every field round-trips, at most one slot of a kind is prepared and one
// active, moves are compare-and-swap with their event, and two stores on
// one database preparing at once get one slot.
func testCASlots(t *testing.T, open Opener) {
	s := openStore(t, open)
	ctx := context.Background()
	if got, err := s.CASlots(ctx); err != nil || len(got) != 0 {
		t.Fatalf("CASlots on an empty store = %v, %v", got, err)
	}
	root := slot(store.SlotRoot, store.SlotActive, "root", 0)
	root.KeySealed = []byte("sealed root key")
	inter := slot(store.SlotIntermediate, store.SlotActive, "inter", 0)
	inter.KeyURI = "pkcs11:token=t;id=%01"
	ev := slotEvent(store.ActionCASlotImported)
	if err := s.AddCASlots(ctx, []*store.CASlot{root, inter}, ev); err != nil {
		t.Fatal(err)
	}
	if root.ID != 1 || inter.ID != 2 || ev.Seq == 0 {
		t.Fatalf("IDs %d, %d, event seq %d: want 1, 2 and a recorded event", root.ID, inter.ID, ev.Seq)
	}
	next := slot(store.SlotIntermediate, store.SlotPrepared, "next", root.ID)
	next.PreparedAt = base.Add(time.Hour)
	if err := s.AddCASlots(ctx, []*store.CASlot{next}, slotEvent(store.ActionCASlotPrepared)); err != nil {
		t.Fatal(err)
	}
	if err := s.AddCASlots(ctx, []*store.CASlot{slot(store.SlotIntermediate, store.SlotPrepared, "other", root.ID)}, slotEvent(store.ActionCASlotPrepared)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("a second prepared intermediate: %v, want ErrConflict", err)
	}
	if err := s.AddCASlots(ctx, []*store.CASlot{slot(store.SlotRoot, store.SlotActive, "root2", 0)}, slotEvent(store.ActionCASlotPrepared)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("a second active root: %v, want ErrConflict", err)
	}
	newRoot := slot(store.SlotRoot, store.SlotPrepared, "root3", 0)
	newRoot.CrossFromPrevious, newRoot.CrossToPrevious = []byte("new by old"), []byte("old by new")
	if err := s.AddCASlots(ctx, []*store.CASlot{newRoot}, slotEvent(store.ActionCASlotPrepared)); err != nil {
		t.Errorf("a prepared root next to a prepared intermediate: %v", err)
	}

	at := base.Add(2 * time.Hour)
	act := slotEvent(store.ActionCASlotActivated)
	moves := []store.SlotMove{{ID: inter.ID, From: store.SlotActive, To: store.SlotRetired}, {ID: next.ID, From: store.SlotPrepared, To: store.SlotActive}}
	if err := s.MoveCASlots(ctx, moves, at, act); err != nil {
		t.Fatal(err)
	}
	if act.Seq == 0 {
		t.Error("the activation's event was not recorded")
	}
	if err := s.MoveCASlots(ctx, moves, at, slotEvent(store.ActionCASlotActivated)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("the same activation twice: %v, want ErrConflict", err)
	}
	// A move that fails halfway writes nothing.
	half := []store.SlotMove{{ID: next.ID, From: store.SlotActive, To: store.SlotRetired}, {ID: 99, From: store.SlotPrepared, To: store.SlotActive}}
	if err := s.MoveCASlots(ctx, half, at, slotEvent(store.ActionCASlotActivated)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("a move of an unknown slot: %v, want ErrConflict", err)
	}
	if err := s.MoveCASlots(ctx, []store.SlotMove{{ID: inter.ID, From: store.SlotRetired, To: store.SlotRemoved}}, at.Add(time.Hour), slotEvent(store.ActionCASlotRemoved)); err != nil {
		t.Fatal(err)
	}

	got, err := s.CASlots(ctx)
	if err != nil || len(got) != 4 {
		t.Fatalf("CASlots = %d slots, %v", len(got), err)
	}
	want := map[int64]store.SlotState{root.ID: store.SlotActive, inter.ID: store.SlotRemoved, next.ID: store.SlotActive, newRoot.ID: store.SlotPrepared}
	for _, g := range got {
		if g.State != want[g.ID] {
			t.Errorf("slot %d is %s, want %s", g.ID, g.State, want[g.ID])
		}
	}
	g := got[1]
	if g.Kind != store.SlotIntermediate || !bytes.Equal(g.Cert, inter.Cert) || g.Fingerprint != inter.Fingerprint || g.KeyURI != inter.KeyURI ||
		g.KeySealed != nil || !g.NotAfter.Equal(inter.NotAfter) || !g.ActivatedAt.Equal(base) || !g.RetiredAt.Equal(at) || !g.RemovedAt.Equal(at.Add(time.Hour)) {
		t.Errorf("intermediate round trip: %+v", g)
	}
	if r := got[0]; !bytes.Equal(r.KeySealed, root.KeySealed) || r.KeyURI != "" {
		t.Errorf("root key round trip: %+v", r)
	}
	if r := got[3]; string(r.CrossFromPrevious) != "new by old" || string(r.CrossToPrevious) != "old by new" || !r.ActivatedAt.IsZero() {
		t.Errorf("new root round trip: %+v", r)
	}
	if n := got[2]; n.Parent != root.ID || !n.PreparedAt.Equal(base.Add(time.Hour)) || !n.ActivatedAt.Equal(at) {
		t.Errorf("next intermediate round trip: %+v", n)
	}

	// Opened with the test's own t: the same database, as a second server.
	other := openStore(t, open)
	t.Run("TwoStoresPrepareAtOnce", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, st := range []store.Store{s, other} {
			wg.Go(func() {
				errs[i] = st.AddCASlots(ctx, []*store.CASlot{slot(store.SlotIntermediate, store.SlotPrepared, "race"+string(rune('a'+i)), root.ID)},
					slotEvent(store.ActionCASlotPrepared))
			})
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, store.ErrConflict):
				t.Errorf("racing prepare: %v, want nil or ErrConflict", err)
			}
		}
		if ok != 1 {
			t.Fatalf("%d of two racing stores prepared, want exactly one (%v)", ok, errs)
		}
	})

	t.Run("IssuedUntil", func(t *testing.T) {
		if u, err := s.IssuedUntil(ctx, "nobody", ""); err != nil || !u.IsZero() {
			t.Fatalf("IssuedUntil of an issuer with nothing = %v, %v", u, err)
		}
		for i, p := range []string{"svc", "mica-ocsp", "svc"} {
			iss := NewIssuance(i)
			iss.Certificate.Profile, iss.Certificate.Issuer = p, "fp-issuer"
			iss.Certificate.NotAfter = base.Add(time.Duration(i+1) * time.Hour)
			if p == "mica-ocsp" {
				iss.Certificate.NotAfter = base.Add(10 * time.Hour)
			}
			if err := s.RecordIssuance(ctx, iss); err != nil {
				t.Fatal(err)
			}
		}
		u, err := s.IssuedUntil(ctx, "fp-issuer", "mica-ocsp")
		if err != nil || !u.Equal(base.Add(3*time.Hour)) {
			t.Fatalf("IssuedUntil = %v, %v; want %v (the OCSP responder's certificate left out)", u, err, base.Add(3*time.Hour))
		}
	})
}
