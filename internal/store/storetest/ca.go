package storetest

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/mica-pki/mica/internal/store"
)

const (
	rootA = "aaaa0000000000000000000000000000000000000000000000000000000000aa"
	rootB = "bbbb0000000000000000000000000000000000000000000000000000000000bb"
)

// testBindCA: a database belongs to the first CA that binds it; another CA
// is refused, and so is a server pointed at an empty database it was
// never initialised on.
func testBindCA(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openStore(t, open)
	if err := s.BindCA(ctx, store.CABinding{Root: rootA, Issuer: "ab12cd34ef"}); !errors.Is(err, store.ErrNoCA) {
		t.Fatalf("serving an empty database: %v, want ErrNoCA", err)
	}
	if err := s.BindCA(ctx, store.CABinding{Root: rootA, Create: true}); err != nil {
		t.Fatalf("first bind: %v", err)
	}
	for _, create := range []bool{false, true} {
		if err := s.BindCA(ctx, store.CABinding{Root: rootA, Create: create}); err != nil {
			t.Errorf("the same CA again (create %v): %v", create, err)
		}
		var foreign *store.ForeignCAError
		if err := s.BindCA(ctx, store.CABinding{Root: rootB, Create: create}); !errors.As(err, &foreign) || foreign.Recorded != rootA || foreign.Want != rootB {
			t.Errorf("another CA (create %v): %v, want a ForeignCAError naming both roots", create, err)
		}
	}
	// The binding survives a reopen.
	s.close(t)
	s2 := openStore(t, open)
	if err := s2.BindCA(ctx, store.CABinding{Root: rootB, Create: true}); err == nil {
		t.Error("after reopen, another CA was accepted")
	}
}

// testBindCALegacy: a database written before bindings were recorded is
// adopted by the CA whose certificates it holds, and refused to any other.
func testBindCALegacy(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openStore(t, open)
	record(t, s, NewIssuance(1)) // issuer "ab12cd34ef"
	var foreign *store.ForeignCAError
	if err := s.BindCA(ctx, store.CABinding{Root: rootB, Issuer: "another", Create: true}); !errors.As(err, &foreign) || foreign.Recorded != "" {
		t.Errorf("init of another CA on a used database: %v, want a ForeignCAError", err)
	}
	if err := s.BindCA(ctx, store.CABinding{Root: rootA, Issuer: "ab12cd34ef"}); err != nil {
		t.Fatalf("its own CA's server: %v", err)
	}
	if err := s.BindCA(ctx, store.CABinding{Root: rootB, Issuer: "ab12cd34ef"}); !errors.As(err, &foreign) || foreign.Recorded != rootA {
		t.Errorf("once adopted, another root: %v", err)
	}
}

// testBindCARace: servers starting together on a new database bind it to
// one CA; with two CAs racing, exactly one wins.
func testBindCARace(t *testing.T, open Opener) {
	ctx := context.Background()
	a, b := openStore(t, open), openStore(t, open)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		s, root := a, rootA
		if i%2 == 1 {
			s, root = b, rootB
		}
		wg.Go(func() { errs[i] = s.BindCA(ctx, store.CABinding{Root: root, Create: true}) })
	}
	wg.Wait()
	won := map[bool]int{}
	for i, err := range errs {
		var foreign *store.ForeignCAError
		switch {
		case err == nil:
			won[i%2 == 0]++
		case !errors.As(err, &foreign):
			t.Fatalf("bind %d: %v", i, err)
		}
	}
	if len(won) != 1 || (won[true] != 4 && won[false] != 4) {
		t.Errorf("successful binds by CA (A true, B false): %v; want all four of one CA and none of the other", won)
	}
}
