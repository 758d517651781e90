package auditlog

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"

	"github.com/mica-pki/mica/internal/auditlog/leaf"
	"github.com/mica-pki/mica/internal/store"
)

// TamperError says where a log stopped matching what was signed.
type TamperError struct {
	// Index is the first leaf index known to be bad. When a rewrite kept
	// each leaf consistent with its stored hash, the checkpoints only bound
	// it: Index is then the first leaf after the last checkpoint that still
	// matched, and Upto the size of the first one that did not.
	Index  int64
	Upto   int64
	Reason string
}

func (e *TamperError) Error() string {
	if e.Upto > e.Index+1 {
		return fmt.Sprintf("auditlog: log tampered: first bad leaf is in [%d, %d): %s", e.Index, e.Upto, e.Reason)
	}
	return fmt.Sprintf("auditlog: log tampered: first bad leaf is %d: %s", e.Index, e.Reason)
}

// Verification recomputes a log from its events, leaf by leaf, and checks
// it against signed checkpoints. Feed it every leaf in order with Add, then
// call Finish. It keeps only a compact range (a few dozen hashes), so a
// log of any size verifies in constant memory.
type Verification struct {
	cps      []Checkpoint // ascending size, the saved one merged in
	savedAt  int          // index in cps of the saved checkpoint, or -1
	next     int          // next checkpoint to reach
	lastGood int64        // size of the last checkpoint that matched
	rng      *compact.Range
	n        int64
	prevSeq  int64 // seq of leaf n-1
	prev2Seq int64 // seq of leaf n-2
	err      *TamperError
	// mismatch is a checkpoint whose root did not match, held back for
	// one more leaf: a leaf-level finding inside its range (a reordering
	// shows at the leaf after the moved one) names the bad leaf exactly,
	// where the root can only say "somewhere in [lastGood, size)".
	mismatch *TamperError
}

// Result is what a successful verification covered.
type Result struct {
	Leaves      int64
	Checkpoints int   // signed checkpoints checked against the recomputed tree
	Covered     int64 // size of the largest of them
}

// NewVerification checks every checkpoint's signature with vkey (ErrForged
// for any other signer) and prepares to verify. saved, if not nil, is a
// checkpoint kept from earlier: the log must still extend it.
func NewVerification(vkey string, checkpoints [][]byte, saved []byte) (*Verification, error) {
	v := &Verification{savedAt: -1, rng: (&compact.RangeFactory{Hash: hasher.HashChildren}).NewEmptyRange(0), prevSeq: -1 << 62, prev2Seq: -1 << 62}
	for _, data := range checkpoints {
		c, err := OpenCheckpoint(data, vkey)
		if err != nil {
			return nil, fmt.Errorf("stored checkpoint: %w", err)
		}
		v.cps = append(v.cps, c)
	}
	if saved != nil {
		c, err := OpenCheckpoint(saved, vkey)
		if err != nil {
			return nil, fmt.Errorf("saved checkpoint: %w", err)
		}
		c.Origin = "saved" // marks it in cps
		v.cps = append(v.cps, c)
	}
	slices.SortStableFunc(v.cps, func(a, b Checkpoint) int { return int(a.Size - b.Size) })
	for i, c := range v.cps {
		if c.Origin == "saved" {
			v.savedAt = i
		}
	}
	// Size-0 checkpoints are checked against the empty root now.
	return v, v.reach()
}

// Add checks the next leaf: its index, its order, its hash against its
// contents, and, whenever the tree reaches a checkpoint's size, the root.
func (v *Verification) Add(ev *store.Event) error {
	if v.err != nil {
		return v.err
	}
	if v.mismatch != nil && v.n > v.mismatch.Upto {
		v.err = v.mismatch
		return v.err
	}
	switch {
	case ev.LeafIndex > v.n:
		return v.fail(v.n, 0, fmt.Sprintf("leaf %d is missing (deleted); the next stored leaf is %d", v.n, ev.LeafIndex))
	case ev.LeafIndex < v.n:
		return v.fail(v.n, 0, fmt.Sprintf("leaf index %d appears twice", ev.LeafIndex))
	}
	h := leaf.Hash(ev)
	if !bytes.Equal(h, ev.LeafHash) {
		return v.fail(v.n, 0, fmt.Sprintf("its contents (seq %d, %s %s) do not match its recorded leaf hash: the event was edited", ev.Seq, ev.Action, ev.Identity))
	}
	if ev.Seq <= v.prevSeq {
		// Leaves are appended in seq order. If this one still fits after
		// the leaf before the previous, it is the previous one that was
		// moved here from later (a swap's first half); otherwise this one.
		bad := v.n
		if ev.Seq > v.prev2Seq {
			bad = v.n - 1
		}
		return v.fail(bad, 0, fmt.Sprintf("leaf %d has event seq %d, leaf %d seq %d: leaves were reordered", v.n-1, v.prevSeq, v.n, ev.Seq))
	}
	v.prev2Seq, v.prevSeq = v.prevSeq, ev.Seq
	if err := v.rng.Append(h, nil); err != nil {
		return fmt.Errorf("auditlog: %w", err)
	}
	v.n++
	return v.reach()
}

// reach compares the root with every checkpoint of the current size.
func (v *Verification) reach() error {
	for v.next < len(v.cps) && v.cps[v.next].Size == v.n {
		c := v.cps[v.next]
		root, err := v.rng.GetRootHash(nil)
		if err != nil {
			return fmt.Errorf("auditlog: %w", err)
		}
		if v.n == 0 {
			root = hasher.EmptyRoot()
		}
		if !bytes.Equal(root, c.Root) {
			what := "signed checkpoint"
			if v.next == v.savedAt {
				what = "your saved checkpoint"
			}
			if v.mismatch == nil {
				v.mismatch = &TamperError{Index: v.lastGood, Upto: c.Size, Reason: fmt.Sprintf(
					"the recomputed root of the first %d leaves is %s, but the %s says %s: history was rewritten",
					c.Size, hex.EncodeToString(root[:8]), what, hex.EncodeToString(c.Root[:8]))}
			}
			v.next++
			continue
		}
		if v.mismatch == nil {
			v.lastGood = c.Size
		}
		v.next++
	}
	return nil
}

func (v *Verification) fail(index, upto int64, reason string) error {
	v.err = &TamperError{Index: index, Upto: upto, Reason: reason}
	if v.mismatch != nil && index >= v.mismatch.Upto {
		v.err = v.mismatch // the root's range comes first
	}
	return v.err
}

// Finish reports a log shorter than a checkpoint (deleted leaves at the
// end) and returns what was verified.
func (v *Verification) Finish() (Result, error) {
	if v.err != nil {
		return Result{}, v.err
	}
	if v.mismatch != nil {
		v.err = v.mismatch
		return Result{}, v.err
	}
	if v.next < len(v.cps) {
		c := v.cps[v.next]
		return Result{}, v.fail(v.n, 0, fmt.Sprintf("the log has %d leaves but a checkpoint of size %d was signed: leaves from %d on were deleted", v.n, c.Size, v.n))
	}
	r := Result{Leaves: v.n, Checkpoints: len(v.cps)}
	if len(v.cps) > 0 {
		r.Covered = v.cps[len(v.cps)-1].Size
	}
	return r, nil
}

// VerifyInclusion checks that ev, recomputed from its contents, is leaf
// index of the tree that checkpoint c signed.
func VerifyInclusion(ev *store.Event, index int64, c Checkpoint, hashes [][]byte) error {
	if err := proof.VerifyInclusion(hasher, uint64(index), uint64(c.Size), leaf.Hash(ev), hashes, c.Root); err != nil {
		return fmt.Errorf("auditlog: leaf %d is not in the signed tree of size %d: %w", index, c.Size, err)
	}
	return nil
}

// VerifyConsistency checks that the tree of older is a prefix of newer's.
func VerifyConsistency(older, newer Checkpoint, hashes [][]byte) error {
	if err := proof.VerifyConsistency(hasher, uint64(older.Size), uint64(newer.Size), hashes, older.Root, newer.Root); err != nil {
		return fmt.Errorf("auditlog: checkpoint of size %d does not extend the one of size %d: history was rewritten: %w", newer.Size, older.Size, err)
	}
	return nil
}
