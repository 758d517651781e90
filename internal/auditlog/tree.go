package auditlog

import (
	"bytes"
	"context"
	"fmt"
	"math/bits"
	"sync"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

var hasher = rfc6962.DefaultHasher

type hash = [32]byte

// serverCut is the lowest level a server keeps in memory for every block
// (see tree): blocks of 256 leaves.
const serverCut = 8

// tree is an append-only RFC 6962 tree. In memory it holds the roots of
// every complete subtree of 2^cut leaves or more, and every level of the
// last block of 2^cut leaves, the one being filled; a node inside an older
// block is recomputed from that block's leaf hashes, read back with read.
// With the server's cut of 8 that is about a third of a megabyte at a
// million leaves where keeping every level took 77 MB, and a proof reads
// one or two blocks of 256 hashes (8 KiB each) from the store. A block
// read back must hash to the root computed when its leaves were appended:
// leaves changed since are reported, never proved.
//
// The zero tree keeps every level in memory (cut 0 means no cut), for
// whoever holds all the leaves anyway: tests and the client's verifier.
type tree struct {
	cut  uint
	read func(ctx context.Context, start int64, n int) ([][]byte, error)

	n     int64
	upper [][]hash // upper[k]: roots of the complete subtrees of 2^(cut+k) leaves
	tail  [][]hash // tail[l]: the level-l nodes of the block being filled

	mu     sync.Mutex // guards block: proofs run concurrently
	block  int64      // index of the block in levels; -1 for none
	levels [][]hash   // its levels 0..cut-1, read back
}

// keepBlocksIn makes an empty t keep its 2^cut-leaf blocks out of memory
// and read them back with read.
func (t *tree) keepBlocksIn(cut uint, read func(ctx context.Context, start int64, n int) ([][]byte, error)) {
	t.cut, t.read, t.block = cut, read, -1
}

func (t *tree) size() int64 { return t.n }

// blockLeaves is the number of leaves of a block; 0 when there are no
// blocks (the zero tree).
func (t *tree) blockLeaves() int64 {
	if t.cut == 0 {
		return 0
	}
	return 1 << t.cut
}

func (t *tree) append(h []byte) error {
	if len(h) != 32 {
		return fmt.Errorf("auditlog: leaf %d has a %d-byte hash, want 32", t.n, len(h))
	}
	if t.cut == 0 {
		appendUp(&t.upper, 0, hash(h))
		t.n++
		return nil
	}
	if t.tail == nil {
		t.tail = make([][]hash, t.cut)
	}
	node, l := hash(h), 0
	for {
		t.tail[l] = append(t.tail[l], node)
		if len(t.tail[l])%2 != 0 {
			break
		}
		k := len(t.tail[l])
		node = hash(hasher.HashChildren(t.tail[l][k-2][:], t.tail[l][k-1][:]))
		if l++; l == int(t.cut) {
			// The block is complete: its root goes up, its levels go.
			appendUp(&t.upper, 0, node)
			for i := range t.tail {
				t.tail[i] = t.tail[i][:0]
			}
			break
		}
	}
	t.n++
	return nil
}

// appendUp appends node to levels[l] and the roots it completes above.
func appendUp(levels *[][]hash, l int, node hash) {
	for {
		if l == len(*levels) {
			*levels = append(*levels, nil)
		}
		lv := append((*levels)[l], node)
		(*levels)[l] = lv
		if len(lv)%2 != 0 {
			return
		}
		node = hash(hasher.HashChildren(lv[len(lv)-2][:], lv[len(lv)-1][:]))
		l++
	}
}

// node is the hash of a complete subtree.
func (t *tree) node(ctx context.Context, id compact.NodeID) ([]byte, error) {
	incomplete := fmt.Errorf("auditlog: tree node %d/%d is not complete yet", id.Level, id.Index)
	if id.Level >= t.cut {
		k := int(id.Level - t.cut)
		if k >= len(t.upper) || id.Index >= uint64(len(t.upper[k])) {
			return nil, incomplete
		}
		h := t.upper[k][id.Index]
		return h[:], nil
	}
	block := int64(id.Index >> (t.cut - id.Level))
	i := id.Index - uint64(block)<<(t.cut-id.Level) // within the block's level
	if block == t.n>>t.cut {
		if i >= uint64(len(t.tail[id.Level])) {
			return nil, incomplete
		}
		h := t.tail[id.Level][i]
		return h[:], nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.block != block {
		if err := t.readBlock(ctx, block); err != nil {
			return nil, err
		}
	}
	h := t.levels[id.Level][i]
	return h[:], nil
}

// readBlock reads complete block b's leaves back and rebuilds its levels;
// t.mu is held.
func (t *tree) readBlock(ctx context.Context, b int64) error {
	n := t.blockLeaves()
	leaves, err := t.read(ctx, b*n, int(n))
	if err != nil {
		return fmt.Errorf("auditlog: read leaves %d to %d back: %w", b*n, (b+1)*n-1, err)
	}
	if int64(len(leaves)) != n {
		return fmt.Errorf("auditlog: the store has %d of leaves %d to %d, which the tree holds: leaves were deleted; run mica audit verify",
			len(leaves), b*n, (b+1)*n-1)
	}
	// Fresh levels each time: a proof running alongside may still hold
	// hashes of the block read before.
	levels := make([][]hash, t.cut)
	for i, h := range leaves {
		if len(h) != 32 {
			return fmt.Errorf("auditlog: leaf %d has a %d-byte hash, want 32", b*n+int64(i), len(h))
		}
		levels[0] = append(levels[0], hash(h))
	}
	for l := 1; l < int(t.cut); l++ {
		below := levels[l-1]
		for i := 0; i+1 < len(below); i += 2 {
			levels[l] = append(levels[l], hash(hasher.HashChildren(below[i][:], below[i+1][:])))
		}
	}
	top := levels[t.cut-1]
	root := hasher.HashChildren(top[0][:], top[1][:])
	if want := t.upper[0][b]; !bytes.Equal(root, want[:]) {
		t.block = -1
		return fmt.Errorf("auditlog: leaves %d to %d in the store no longer hash to what the tree was built from: leaves were changed; run mica audit verify",
			b*n, (b+1)*n-1)
	}
	t.block, t.levels = b, levels
	return nil
}

// root is the RFC 6962 root of the first size leaves: the complete
// subtrees that make up size, folded from the right.
func (t *tree) root(ctx context.Context, size int64) ([]byte, error) {
	if size < 0 || size > t.size() {
		return nil, fmt.Errorf("auditlog: no tree of size %d; the log has %d leaves", size, t.size())
	}
	if size == 0 {
		return hasher.EmptyRoot(), nil
	}
	var root []byte
	end := uint64(size)
	for end > 0 {
		level := uint(bits.TrailingZeros64(end))
		h, err := t.node(ctx, compact.NodeID{Level: level, Index: end>>level - 1})
		if err != nil {
			return nil, err
		}
		if root == nil {
			root = h
		} else {
			root = hasher.HashChildren(h, root)
		}
		end -= 1 << level
	}
	return root, nil
}

func (t *tree) fetch(ctx context.Context, nodes proof.Nodes) ([][]byte, error) {
	hashes := make([][]byte, len(nodes.IDs))
	for i, id := range nodes.IDs {
		h, err := t.node(ctx, id)
		if err != nil {
			return nil, err
		}
		hashes[i] = h
	}
	return nodes.Rehash(hashes, hasher.HashChildren)
}

func (t *tree) inclusion(ctx context.Context, index, size int64) ([][]byte, error) {
	if index < 0 || index >= size || size > t.size() {
		return nil, fmt.Errorf("auditlog: no leaf %d in a tree of size %d", index, size)
	}
	nodes, err := proof.Inclusion(uint64(index), uint64(size))
	if err != nil {
		return nil, fmt.Errorf("auditlog: %w", err)
	}
	return t.fetch(ctx, nodes)
}

func (t *tree) consistency(ctx context.Context, size1, size2 int64) ([][]byte, error) {
	if size1 < 0 || size1 > size2 || size2 > t.size() {
		return nil, fmt.Errorf("auditlog: no consistency proof from size %d to %d; the log has %d leaves", size1, size2, t.size())
	}
	nodes, err := proof.Consistency(uint64(size1), uint64(size2))
	if err != nil {
		return nil, fmt.Errorf("auditlog: %w", err)
	}
	return t.fetch(ctx, nodes)
}
