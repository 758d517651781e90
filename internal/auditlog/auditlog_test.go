package auditlog

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/compact"

	"github.com/mica-pki/mica/internal/auditlog/leaf"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlite"
)

const origin = "example.test/mica/audit"

func newSigner(t testing.TB) *Signer {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(origin, key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var t0 = time.Date(2031, 1, 2, 3, 4, 5, 678901000, time.UTC)

// events makes n distinct events as a store would return them.
func events(n int) []store.Event {
	out := make([]store.Event, n)
	for i := range out {
		ev := store.Event{Seq: int64(10 + 3*i), LeafIndex: int64(i), Time: t0.Add(time.Duration(i) * time.Millisecond),
			Actor: "system", Action: store.ActionCertIssued, Identity: fmt.Sprintf("spiffe://example.test/s/%d", i),
			Serial: fmt.Sprintf("%x", i+1000), Outcome: "ok", Detail: "d"}
		ev.LeafHash = leaf.Hash(&ev)
		out[i] = ev
	}
	return out
}

func TestTreeMatchesCompactRange(t *testing.T) {
	// Cut 0 keeps every level; the others read older blocks back, as a
	// server does with blocks of 2^8 leaves.
	for _, cut := range []uint{0, 1, 2, 3} {
		t.Run(fmt.Sprint("cut", cut), func(t *testing.T) { testTreeMatchesCompactRange(t, cut) })
	}
}

// leafReader reads hashes from evs as the store would, counting reads.
func leafReader(evs []store.Event, reads *int) func(context.Context, int64, int) ([][]byte, error) {
	return func(_ context.Context, start int64, n int) ([][]byte, error) {
		*reads++
		var out [][]byte
		for i := start; i < int64(len(evs)) && len(out) < n; i++ {
			out = append(out, evs[i].LeafHash)
		}
		return out, nil
	}
}

func testTreeMatchesCompactRange(t *testing.T, cut uint) {
	evs := events(70)
	var tr tree
	var reads int
	if cut > 0 {
		tr.keepBlocksIn(cut, leafReader(evs, &reads))
	}
	rng := (&compact.RangeFactory{Hash: hasher.HashChildren}).NewEmptyRange(0)
	for i := range evs {
		if err := tr.append(evs[i].LeafHash); err != nil {
			t.Fatal(err)
		}
		rng.Append(evs[i].LeafHash, nil)
		want, _ := rng.GetRootHash(nil)
		for _, size := range []int64{int64(i + 1)} {
			got, err := tr.root(context.Background(), size)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("root(%d) differs from the compact range's", size)
			}
		}
	}
	for size := int64(1); size <= 70; size++ {
		root, _ := tr.root(context.Background(), size)
		c := Checkpoint{Size: size, Root: root}
		for index := int64(0); index < size; index++ {
			p, err := tr.inclusion(context.Background(), index, size)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyInclusion(&evs[index], index, c, p); err != nil {
				t.Fatalf("inclusion(%d, %d): %v", index, size, err)
			}
		}
		for size1 := int64(0); size1 <= size; size1++ {
			root1, _ := tr.root(context.Background(), size1)
			p, err := tr.consistency(context.Background(), size1, size)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyConsistency(Checkpoint{Size: size1, Root: root1}, c, p); err != nil {
				t.Fatalf("consistency(%d, %d): %v", size1, size, err)
			}
		}
	}
	if cut == 0 {
		if reads != 0 {
			t.Errorf("the zero tree read %d blocks back", reads)
		}
		return
	}
	if reads == 0 {
		t.Fatal("no block was read back: the test proves nothing about them")
	}
	if held := len(tr.tail[0]) + len(tr.upper[0]); held > 70>>cut+1<<cut {
		t.Errorf("tree holds %d hashes at its lowest kept levels for 70 leaves", held)
	}
	// A leaf changed or deleted in the store after the tree was built is
	// reported when its block is read back, not proved.
	changed := slices.Clone(evs)
	changed[1].LeafHash = bytes.Repeat([]byte{7}, 32)
	for name, evs := range map[string][]store.Event{"changed": changed, "deleted": evs[:1]} {
		tr.keepBlocksIn(cut, leafReader(evs, &reads))
		if _, err := tr.inclusion(context.Background(), 0, 70); err == nil {
			t.Errorf("inclusion proof of leaf 0 with a leaf of its block %s in the store: no error", name)
		}
	}
}

func TestLeafEncoding(t *testing.T) {
	ev := events(1)[0]
	ev.Detail = `<tag> & "quotes" é`
	enc := leaf.Encode(&ev)
	if enc[0] != leaf.Version1 {
		t.Fatalf("first byte %#x, want version 1", enc[0])
	}
	want := `{"time":1925089445678901,"actor":"system","source":"","action":"cert.issued","serial":"3e8","fingerprint":"","identity":"spiffe://example.test/s/0","profile":"","outcome":"ok","detail":"<tag> & \"quotes\" é"}`
	if string(enc[1:]) != want {
		t.Errorf("encoding\n got %s\nwant %s", enc[1:], want)
	}
	back, err := leaf.Decode(enc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(leaf.Encode(&back), enc) {
		t.Error("Decode(Encode(ev)) does not encode the same")
	}
}

// signAll makes a checkpoint after every size in sizes.
func signAll(t *testing.T, s *Signer, evs []store.Event, sizes ...int64) [][]byte {
	t.Helper()
	var tr tree
	for _, ev := range evs {
		tr.append(ev.LeafHash)
	}
	var notes [][]byte
	for _, size := range sizes {
		root, err := tr.root(context.Background(), size)
		if err != nil {
			t.Fatal(err)
		}
		n, err := SignCheckpoint(s, size, root)
		if err != nil {
			t.Fatal(err)
		}
		notes = append(notes, n)
	}
	return notes
}

func verifyAll(vkey string, notes [][]byte, saved []byte, evs []store.Event) (Result, error) {
	v, err := NewVerification(vkey, notes, saved)
	if err != nil {
		return Result{}, err
	}
	for i := range evs {
		if err := v.Add(&evs[i]); err != nil {
			return Result{}, err
		}
	}
	return v.Finish()
}

func TestVerificationDetectsTampering(t *testing.T) {
	s := newSigner(t)
	const n = 20
	notes := signAll(t, s, events(n), 5, 10, 20)
	tests := []struct {
		name      string
		tamper    func([]store.Event) []store.Event
		wantIndex int64 // -1: verifies
		wantUpto  int64
	}{
		{"Untouched", func(e []store.Event) []store.Event { return e }, -1, 0},
		{"EditOneLeaf", func(e []store.Event) []store.Event { e[7].Identity = "spiffe://example.test/evil"; return e }, 7, 0},
		{"DeleteLastLeaf", func(e []store.Event) []store.Event { return e[:n-1] }, n - 1, 0},
		{"DeleteMiddleLeaf", func(e []store.Event) []store.Event {
			return append(e[:4:4], e[5:]...)
		}, 4, 0},
		{"SwapTwoLeaves", func(e []store.Event) []store.Event {
			e[3], e[12] = e[12], e[3]
			e[3].LeafIndex, e[12].LeafIndex = 3, 12
			return e
		}, 3, 0},
		// A checkpoint at size 5 ends right after the moved leaf 4: the
		// root alone could say only [0, 5); the order check at leaf 5
		// names leaf 4.
		{"SwapEndingAtCheckpoint", func(e []store.Event) []store.Event {
			e[4], e[7] = e[7], e[4]
			e[4].LeafIndex, e[7].LeafIndex = 4, 7
			return e
		}, 4, 0},
		{"RewriteWithMatchingHash", func(e []store.Event) []store.Event {
			e[13].Detail = "rewritten"
			e[13].LeafHash = leaf.Hash(&e[13])
			return e
		}, 10, 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := verifyAll(s.VerifierKey(), notes, nil, tc.tamper(events(n)))
			if tc.wantIndex < 0 {
				if err != nil {
					t.Fatalf("untouched log: %v", err)
				}
				return
			}
			var te *TamperError
			if !errors.As(err, &te) {
				t.Fatalf("error %v, want a TamperError", err)
			}
			if te.Index != tc.wantIndex || te.Upto != tc.wantUpto {
				t.Errorf("first bad leaf %d (upto %d), want %d (upto %d): %v", te.Index, te.Upto, tc.wantIndex, tc.wantUpto, err)
			}
		})
	}
}

func TestForgedCheckpointRejected(t *testing.T) {
	real, forger := newSigner(t), newSigner(t)
	evs := events(8)
	forged := signAll(t, forger, evs, 8)[0]
	if _, err := OpenCheckpoint(forged, real.VerifierKey()); !errors.Is(err, ErrForged) {
		t.Errorf("OpenCheckpoint(forged) = %v, want ErrForged", err)
	}
	if _, err := verifyAll(real.VerifierKey(), signAll(t, real, evs, 8), forged, evs); !errors.Is(err, ErrForged) {
		t.Errorf("verify with a forged saved checkpoint = %v, want ErrForged", err)
	}
	if _, err := verifyAll(real.VerifierKey(), [][]byte{forged}, nil, evs); !errors.Is(err, ErrForged) {
		t.Errorf("verify with a forged stored checkpoint = %v, want ErrForged", err)
	}
}

// TestConsistencyAfterManyEvents runs the log on a real store: a checkpoint
// saved early must be extended by the one signed 10,000 events later, by
// the server's consistency proof and by recomputing the whole tree.
func TestConsistencyAfterManyEvents(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "mica.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := newSigner(t)
	l, err := New(Config{Store: st, Signer: s})
	if err != nil {
		t.Fatal(err)
	}
	record := func(n int) {
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Go(func() {
				for i := w; i < n; i += 16 {
					ev := store.Event{Time: t0, Actor: "system", Action: store.ActionTokenCreated, Identity: fmt.Sprintf("spiffe://example.test/%d", i), Outcome: "ok"}
					if err := st.RecordEvent(ctx, &ev); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	record(37)
	saved, err := l.Latest(ctx, 36)
	if err != nil {
		t.Fatal(err)
	}
	record(10000)
	latest, err := l.Latest(ctx, 10036)
	if err != nil {
		t.Fatal(err)
	}
	if saved.Size != 37 || latest.Size != 10037 {
		t.Fatalf("checkpoint sizes %d and %d, want 37 and 10037", saved.Size, latest.Size)
	}
	old, err := OpenCheckpoint(saved.Note, s.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	cur, err := OpenCheckpoint(latest.Note, s.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	p, err := l.ConsistencyProof(ctx, old.Size, cur.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyConsistency(old, cur, p); err != nil {
		t.Fatal(err)
	}
	// A checkpoint of a different history at the old size must fail.
	other := old
	other.Root = bytes.Repeat([]byte{1}, 32)
	if err := VerifyConsistency(other, cur, p); err == nil {
		t.Error("consistency proof accepted against a different old root")
	}
	if res := verifyStore(t, st, s.VerifierKey(), saved.Note, 10000); res.Leaves != 10037 || res.Covered != 10037 {
		t.Errorf("verified %+v, want 10037 leaves all covered", res)
	}
}

// verifyStore verifies the whole log kept in st, reading leaves page by
// page, against every checkpoint stored there and saved (if not nil).
func verifyStore(t *testing.T, st store.Store, vkey string, saved []byte, page int) Result {
	t.Helper()
	ctx := context.Background()
	cps, err := st.Checkpoints(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var notes [][]byte
	for _, c := range cps {
		notes = append(notes, c.Note)
	}
	v, err := NewVerification(vkey, notes, saved)
	if err != nil {
		t.Fatal(err)
	}
	for start := int64(0); ; {
		leaves, err := st.Leaves(ctx, start, page)
		if err != nil {
			t.Fatal(err)
		}
		for i := range leaves {
			if err := v.Add(&leaves[i]); err != nil {
				t.Fatal(err)
			}
		}
		start += int64(len(leaves))
		if len(leaves) < page {
			break
		}
	}
	res, err := v.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return res
}

type recorder struct {
	mu  sync.Mutex
	evs []store.Event
}

func (r *recorder) RecordEvent(_ context.Context, ev *store.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, *ev)
	return nil
}

// TestThrottleAuthFailures: the first failure from a source is a leaf at
// once, the rest of the minute one summary counting them by reason; past
// 1,000 sources a minute everything shares one summary.
func TestThrottleAuthFailures(t *testing.T) {
	rec := &recorder{}
	f := NewThrottle(rec, func() time.Time { return t0 }, nil)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for range 1000 {
		f.AuthFailed(a, "token-invalid")
	}
	f.AuthFailed(a, "unauthenticated")
	f.AuthFailed(b, "certificate-expired")
	if len(rec.evs) != 2 {
		t.Fatalf("%d events at once for failures from 2 sources, want the first of each", len(rec.evs))
	}
	if ev := rec.evs[0]; ev.Action != store.ActionAuthFailed || ev.Source != "192.0.2.1" || ev.Actor != "unauthenticated" ||
		!strings.Contains(ev.Detail, "token-invalid") {
		t.Errorf("first event %+v, want the first failure from 192.0.2.1", ev)
	}
	if err := f.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(rec.evs) != 3 {
		t.Fatalf("%d events after the flush, want one summary more (192.0.2.2 failed once)", len(rec.evs))
	}
	if ev := rec.evs[2]; ev.Source != "192.0.2.1" || !strings.HasPrefix(ev.Detail, "1000 more since") ||
		!strings.Contains(ev.Detail, "(token-invalid 999, unauthenticated 1)") {
		t.Errorf("summary %+v, want 1000 more from 192.0.2.1 by reason", ev)
	}
	if err := f.Flush(context.Background()); err != nil || len(rec.evs) != 3 {
		t.Errorf("an empty flush recorded events")
	}
	before := len(rec.evs)
	for i := range maxThrottleKeys + 50 {
		f.AuthFailed(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), "x")
	}
	f.Flush(context.Background())
	if got := len(rec.evs) - before; got != maxThrottleKeys+1 {
		t.Errorf("%d events for %d sources, want %d at once and one summary of the rest", got, maxThrottleKeys+50, maxThrottleKeys+1)
	}
	if last := rec.evs[len(rec.evs)-1]; !strings.HasPrefix(last.Detail, "50 more since") || last.Actor != "various" {
		t.Errorf("summary beyond the key bound: %+v", last)
	}
}

// BenchmarkVerify1M is the client-side cost of `mica audit verify` on a log
// of a million leaves, once they are fetched: recompute each leaf hash from
// its event, rebuild the tree, check a checkpoint every 1,000 leaves.
func BenchmarkVerify1M(b *testing.B) {
	const n = 1_000_000
	evs := events(n)
	s := newSigner(b)
	var tr tree
	var notes [][]byte
	for i := range evs {
		tr.append(evs[i].LeafHash)
		if (i+1)%1000 == 0 {
			root, _ := tr.root(context.Background(), int64(i+1))
			note, _ := SignCheckpoint(s, int64(i+1), root)
			notes = append(notes, note)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		res, err := verifyAll(s.VerifierKey(), notes, nil, evs)
		if err != nil || res.Leaves != n {
			b.Fatal(res, err)
		}
	}
}

func TestStatus(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "mica.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := t0
	l, err := New(Config{Store: st, Signer: newSigner(t), Clock: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if s := l.Status(); s != (Status{}) {
		t.Errorf("Status of a new log = %+v, want zero", s)
	}
	record := func(n int) {
		for i := range n {
			ev := store.Event{Time: t0, Actor: "system", Action: store.ActionTokenCreated, Identity: fmt.Sprintf("spiffe://example.test/%d", i), Outcome: "ok"}
			if err := st.RecordEvent(ctx, &ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	record(5)
	if err := l.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if s := l.Status(); s.Leaves != 5 || s.CheckpointSize != 5 || !s.CheckpointTime.Equal(t0) {
		t.Errorf("after a checkpoint Status = %+v, want 5 leaves checkpointed at %v", s, t0)
	}
	// The log grows but the next round has not run: leaves are synced only
	// by RunOnce, and the checkpoint is the old one.
	record(3)
	now = t0.Add(time.Minute)
	if _, err := l.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if s := l.Status(); s.Leaves != 8 || s.CheckpointSize != 5 {
		t.Errorf("after growth Status = %+v, want 8 leaves and the checkpoint at 5", s)
	}
	if err := l.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if s := l.Status(); s.Leaves != 8 || s.CheckpointSize != 8 || !s.CheckpointTime.Equal(now) {
		t.Errorf("after the next round Status = %+v, want 8 checkpointed at %v", s, now)
	}
}
