package pgbuckets

import (
	"context"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/ratelimit"
	"github.com/mica-pki/mica/internal/store/postgres"
	"github.com/mica-pki/mica/internal/store/postgres/pgtest"
)

var cluster pgtest.Cluster

func TestMain(m *testing.M) { os.Exit(cluster.Run(m)) }

// replicas opens the store (which migrates the database) and n backends,
// each with its own pool, as n servers would.
func replicas(t *testing.T, n int) []*Backend {
	t.Helper()
	ctx := context.Background()
	url := cluster.Database(t)
	st, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var out []*Backend
	for range n {
		b, err := Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Check(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		out = append(out, b)
	}
	return out
}

var hourly5 = ratelimit.Limit{Rate: ratelimit.Rate{Events: 5, Per: time.Hour}, Burst: 5}

// TestLimitHoldsAcrossReplicas: two replicas taking from the same key at
// once spend its burst exactly, never more.
func TestLimitHoldsAcrossReplicas(t *testing.T) {
	rs := replicas(t, 2)
	now := time.Now()
	var admitted atomic.Int32
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			r, _, err := rs[i%2].TakeAll(context.Background(), now,
				[]ratelimit.SharedClaim{{Bucket: "identity", Key: "spiffe://example.org/loop", Limit: hourly5}})
			if err != nil {
				t.Error(err)
			}
			if r < 0 {
				admitted.Add(1)
			}
		})
	}
	wg.Wait()
	if n := admitted.Load(); n != 5 {
		t.Errorf("40 concurrent requests on two replicas: %d admitted, want the burst of 5", n)
	}
	// A twelfth of an hour later one token has come back, for either replica.
	later := now.Add(12 * time.Minute)
	if r, _, _ := rs[1].TakeAll(context.Background(), later, []ratelimit.SharedClaim{{Bucket: "identity", Key: "spiffe://example.org/loop", Limit: hourly5}}); r != -1 {
		t.Error("no token after a fifth of the refill period")
	}
	r, wait, err := rs[0].TakeAll(context.Background(), later, []ratelimit.SharedClaim{{Bucket: "identity", Key: "spiffe://example.org/loop", Limit: hourly5}})
	if err != nil || r != 0 || wait <= 11*time.Minute || wait > 12*time.Minute {
		t.Errorf("empty bucket: refused %d, retry after %v, %v; want refused, about 12m", r, wait, err)
	}
}

// TestAllOrNothing: when one bucket is empty the tokens taken from the
// others are given back; sweeping forgets only refilled buckets.
func TestAllOrNothing(t *testing.T) {
	rs := replicas(t, 1)
	ctx, now := context.Background(), time.Now()
	one := ratelimit.Limit{Rate: ratelimit.Rate{Events: 1, Per: time.Hour}, Burst: 1}
	take := func(claims ...ratelimit.SharedClaim) int {
		t.Helper()
		r, _, err := rs[0].TakeAll(ctx, now, claims)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := take(ratelimit.SharedClaim{Bucket: "source", Key: "192.0.2.1", Limit: one}); r != -1 {
		t.Fatal("first take refused")
	}
	both := []ratelimit.SharedClaim{{Bucket: "identity", Key: "a", Limit: one}, {Bucket: "source", Key: "192.0.2.1", Limit: one}}
	if r := take(both...); r != 1 {
		t.Fatalf("take with an empty source bucket: refused %d, want 1", r)
	}
	// The identity's token was given back: it can still be taken alone.
	if r := take(both[0]); r != -1 {
		t.Error("the identity's token was not given back when the source refused")
	}
	if n, err := rs[0].Sweep(ctx, now.Add(30*time.Minute)); err != nil || n != 0 {
		t.Errorf("sweep half-way through the refill removed %d rows (%v), want none", n, err)
	}
	if n, err := rs[0].Sweep(ctx, now.Add(2*time.Hour)); err != nil || n != 2 {
		t.Errorf("sweep after the refill removed %d rows (%v), want both", n, err)
	}
}

// BenchmarkTakeAll is the cost a request pays for limits shared across
// replicas: one statement over its three buckets (identity, requester,
// source), many keys so that rows are inserted and updated.
func BenchmarkTakeAll(b *testing.B) {
	ctx := context.Background()
	url := cluster.Database(b)
	st, err := postgres.Open(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	be, err := Open(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	l := ratelimit.Limit{Rate: ratelimit.Rate{Events: 1 << 30, Per: time.Second}, Burst: 1 << 30}
	i := 0
	for b.Loop() {
		k := strconv.Itoa(i % 1000)
		i++
		if r, _, err := be.TakeAll(ctx, time.Now(), []ratelimit.SharedClaim{
			{Bucket: "identity", Key: "id" + k, Limit: l}, {Bucket: "requester", Key: "admin", Limit: l}, {Bucket: "source", Key: "192.0.2." + k, Limit: l},
		}); err != nil || r != -1 {
			b.Fatal(r, err)
		}
	}
}
