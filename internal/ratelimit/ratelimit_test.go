package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// clock is a settable test clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time       { return c.t }
func (c *clock) step(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock                { return &clock{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)} }
func limit(events int, per time.Duration, burst int) Limit {
	return Limit{Rate: Rate{Events: events, Per: per}, Burst: burst}
}

func TestParseRate(t *testing.T) {
	good := map[string]Rate{
		"10/h":    {10, time.Hour},
		"600/1h":  {600, time.Hour},
		"5/m":     {5, time.Minute},
		"100/s":   {100, time.Second},
		"20/d":    {20, 24 * time.Hour},
		"30/15m":  {30, 15 * time.Minute},
		"1/7d":    {1, 7 * 24 * time.Hour},
		" 3 / h ": {3, time.Hour},
		"off":     {},
	}
	for in, want := range good {
		got, err := ParseRate(in)
		if err != nil || got != want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	bad := map[string]string{
		"":        "is not a rate",
		"10":      "is not a rate",
		"ten/h":   "is not a rate",
		"0/h":     "is not a rate",
		"-1/h":    "is not a rate",
		"10/x":    "the period \"x\" must be",
		"10/10ms": "must be s, m, h, d or a duration from 1s",
		"10/400d": "must be s, m, h, d or a duration from 1s",
		"10/h/2":  "the period",
	}
	for in, want := range bad {
		_, err := ParseRate(in)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "ratelimit: ") {
			t.Errorf("ParseRate(%q) error = %v, want one containing %q", in, err, want)
		}
	}
	if s := (Rate{10, time.Hour}).String(); s != "10/h" {
		t.Errorf("String = %q", s)
	}
}

func TestBurstThenRefill(t *testing.T) {
	c := newClock()
	b := New(limit(6, time.Minute, 3), 100, c.now) // one token every 10s
	for i := range 3 {
		if ok, _ := b.Take("k"); !ok {
			t.Fatalf("take %d of the burst refused", i+1)
		}
	}
	ok, wait := b.Take("k")
	if ok || wait != 10*time.Second {
		t.Fatalf("after the burst: ok=%v wait=%v, want refused for 10s", ok, wait)
	}
	c.step(4 * time.Second)
	if ok, wait := b.Take("k"); ok || wait != 6*time.Second {
		t.Fatalf("4s later: ok=%v wait=%v, want refused for 6s", ok, wait)
	}
	c.step(6 * time.Second)
	if ok, _ := b.Take("k"); !ok {
		t.Fatal("a token should have refilled after 10s")
	}
	if ok, _ := b.Take("other"); !ok {
		t.Fatal("another key has its own bucket")
	}
	c.step(time.Hour)
	for i := range 3 {
		if ok, _ := b.Take("k"); !ok {
			t.Fatalf("after an hour the bucket holds only its burst, but take %d was refused", i+1)
		}
	}
	if ok, _ := b.Take("k"); ok {
		t.Fatal("refill must stop at the burst")
	}
}

func TestGiveReturnsAToken(t *testing.T) {
	c := newClock()
	b := New(limit(1, time.Hour, 1), 100, c.now)
	b.Take("k")
	if ok, _ := b.Take("k"); ok {
		t.Fatal("second take should be refused")
	}
	b.Give("k")
	if ok, _ := b.Take("k"); !ok {
		t.Fatal("a given-back token should be takeable")
	}
	b.Give("fresh")
	b.Give("fresh")
	for i := range 2 {
		ok, _ := b.Take("fresh")
		if ok != (i == 0) {
			t.Fatalf("take %d of a bucket given back twice: ok=%v; Give must not exceed the burst", i+1, ok)
		}
	}
}

func TestUnlimitedTakesAlways(t *testing.T) {
	b := New(Limit{}, 10, nil)
	for range 1000 {
		if ok, _ := b.Take("k"); !ok {
			t.Fatal("unlimited refused")
		}
	}
	if b.Keys() != 0 {
		t.Errorf("unlimited buckets track %d keys, want none", b.Keys())
	}
}

func TestKeysAreBounded(t *testing.T) {
	c := newClock()
	b := New(limit(1, time.Hour, 1), 1000, c.now)
	for i := range 100_000 {
		b.Take(fmt.Sprint("10.0.", i/256, ".", i%256))
	}
	if n := b.Keys(); n > 1000 {
		t.Fatalf("%d keys tracked, over the bound of 1000", n)
	}
}

func TestRefilledBucketsAreForgotten(t *testing.T) {
	c := newClock()
	b := New(limit(60, time.Minute, 5), 10, c.now) // one shard, so order is exact
	for i := range 5 {
		b.Take(fmt.Sprint("idle-", i))
	}
	c.step(10 * time.Second) // every idle bucket is full again
	for i := range 3 {
		b.Take(fmt.Sprint("new-", i))
	}
	// Each insertion drops up to two refilled buckets: 5 idle ones are gone
	// after three insertions, leaving only the new keys.
	if n := b.Keys(); n != 3 {
		t.Fatalf("%d keys tracked, want 3: refilled buckets carry nothing and should be dropped", n)
	}
}

func TestTakeAllIsAllOrNothing(t *testing.T) {
	c := newClock()
	slow := New(limit(1, time.Hour, 1), 100, c.now)
	fast := New(limit(1, time.Minute, 1), 100, c.now)
	if refused, _ := TakeAll(Claim{fast, "a"}, Claim{slow, "b"}, Claim{fast, ""}); refused != -1 {
		t.Fatalf("first TakeAll refused claim %d", refused)
	}
	c.step(time.Minute) // a has refilled, b has not
	refused, wait := TakeAll(Claim{fast, "a"}, Claim{slow, "b"})
	if refused != 1 || wait != 59*time.Minute {
		t.Fatalf("refused %d, wait %v; want claim 1, 59m", refused, wait)
	}
	if ok, _ := fast.Take("a"); !ok {
		t.Fatal("a's token was not given back after b refused")
	}
	// Both empty: the longest wait wins.
	refused, wait = TakeAll(Claim{fast, "a"}, Claim{slow, "b"})
	if refused != 0 || wait != 59*time.Minute {
		t.Fatalf("refused %d, wait %v; want claim 0 and the longer wait, 59m", refused, wait)
	}
}

// fakeBackend is a Backend that refuses a chosen claim, or fails.
type fakeBackend struct {
	refuse int
	fail   error
	got    []SharedClaim
}

func (f *fakeBackend) TakeAll(_ context.Context, _ time.Time, claims []SharedClaim) (int, time.Duration, error) {
	f.got = claims
	if f.fail != nil {
		return 0, 0, f.fail
	}
	if f.refuse >= 0 {
		return f.refuse, time.Minute, nil
	}
	return -1, 0, nil
}

// TestTakeAllContextShared: claims on shared buckets go to the backend in
// one call (skipped claims left out, the refused index mapped back), and
// a backend that fails leaves the decision to the local buckets.
func TestTakeAllContextShared(t *testing.T) {
	l := Limit{Rate: Rate{Events: 1, Per: time.Hour}, Burst: 1}
	be := &fakeBackend{refuse: 1}
	a, b, c := New(l, 10, nil).Shared("a", be), New(l, 10, nil).Shared("b", be), New(l, 10, nil).Shared("c", be)
	r, wait, err := TakeAllContext(context.Background(), Claim{a, "k1"}, Claim{b, ""}, Claim{c, "k3"})
	if err != nil || r != 2 || wait != time.Minute {
		t.Errorf("refused %d after %v (%v), want claim 2 (the backend's second) after 1m", r, wait, err)
	}
	if len(be.got) != 2 || be.got[0] != (SharedClaim{"a", "k1", l}) || be.got[1] != (SharedClaim{"c", "k3", l}) {
		t.Errorf("the backend got %+v", be.got)
	}
	be.fail = errors.New("database down")
	for i, want := range []int{-1, 0} {
		r, _, err := TakeAllContext(context.Background(), Claim{a, "k1"})
		if err == nil || r != want {
			t.Errorf("take %d with the backend down: refused %d, %v; want %d by the local bucket and the error", i, r, err, want)
		}
	}
}
