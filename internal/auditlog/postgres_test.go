package auditlog

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/postgres"
	"github.com/mica-pki/mica/internal/store/postgres/pgtest"
)

var cluster pgtest.Cluster

func TestMain(m *testing.M) { os.Exit(cluster.Run(m)) }

// TestTwoServersOneLog is two servers (store + log each, sharing the log
// key as replicas share a data directory) on one PostgreSQL database,
// writing and signing at once. The log must never fork: every checkpoint
// either signed is a prefix of one history that verifies.
func TestTwoServersOneLog(t *testing.T) {
	ctx := context.Background()
	url := cluster.Database(t)
	signer := newSigner(t)
	type server struct {
		st  *postgres.Store
		log *Log
	}
	var servers []server
	for range 2 {
		st, err := postgres.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		l, err := New(Config{Store: st, Signer: signer})
		if err != nil {
			t.Fatal(err)
		}
		servers = append(servers, server{st, l})
	}
	const perWriter = 300
	var wg sync.WaitGroup
	for w := range 8 {
		s := servers[w%2]
		wg.Go(func() {
			for i := range perWriter {
				ev := store.Event{Time: t0, Actor: fmt.Sprintf("writer-%d", w), Action: store.ActionTokenCreated, Outcome: "ok", Detail: fmt.Sprint(i)}
				if err := s.st.RecordEvent(ctx, &ev); err != nil {
					t.Error(err)
					return
				}
				if i%50 == 0 {
					if err := s.log.RunOnce(ctx); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	for _, s := range servers {
		if err := s.log.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Read through the other server: both see the one log.
	res := verifyStore(t, servers[1].st, signer.VerifierKey(), nil, 1000)
	if res.Leaves != 8*perWriter || res.Covered != 8*perWriter || res.Checkpoints < 2 {
		t.Errorf("verified %+v, want %d leaves covered by several checkpoints", res, 8*perWriter)
	}
}
