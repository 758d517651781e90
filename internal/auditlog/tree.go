package auditlog

import (
	"fmt"
	"math/bits"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

var hasher = rfc6962.DefaultHasher

type hash = [32]byte

// tree is an append-only RFC 6962 tree kept in memory: level 0 holds the
// leaf hashes, level k the roots of the complete subtrees of 2^k leaves.
// That is under two hashes per leaf (about 64 MB at a million leaves) and
// makes every proof a handful of lookups; it is rebuilt from the stored
// leaf hashes at start-up.
type tree struct {
	levels [][]hash
}

func (t *tree) size() int64 {
	if len(t.levels) == 0 {
		return 0
	}
	return int64(len(t.levels[0]))
}

func (t *tree) append(h []byte) error {
	if len(h) != 32 {
		return fmt.Errorf("auditlog: leaf %d has a %d-byte hash, want 32", t.size(), len(h))
	}
	if len(t.levels) == 0 {
		t.levels = [][]hash{nil}
	}
	t.levels[0] = append(t.levels[0], hash(h))
	for l := 0; len(t.levels[l])%2 == 0; l++ {
		if l+1 == len(t.levels) {
			t.levels = append(t.levels, nil)
		}
		n := len(t.levels[l])
		t.levels[l+1] = append(t.levels[l+1], hash(hasher.HashChildren(t.levels[l][n-2][:], t.levels[l][n-1][:])))
	}
	return nil
}

// node is the hash of a complete subtree.
func (t *tree) node(id compact.NodeID) ([]byte, error) {
	if int(id.Level) >= len(t.levels) || id.Index >= uint64(len(t.levels[id.Level])) {
		return nil, fmt.Errorf("auditlog: tree node %d/%d is not complete yet", id.Level, id.Index)
	}
	h := t.levels[id.Level][id.Index]
	return h[:], nil
}

// root is the RFC 6962 root of the first size leaves: the complete
// subtrees that make up size, folded from the right.
func (t *tree) root(size int64) ([]byte, error) {
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
		h, err := t.node(compact.NodeID{Level: level, Index: end>>level - 1})
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

func (t *tree) fetch(nodes proof.Nodes) ([][]byte, error) {
	hashes := make([][]byte, len(nodes.IDs))
	for i, id := range nodes.IDs {
		h, err := t.node(id)
		if err != nil {
			return nil, err
		}
		hashes[i] = h
	}
	return nodes.Rehash(hashes, hasher.HashChildren)
}

func (t *tree) inclusion(index, size int64) ([][]byte, error) {
	if index < 0 || index >= size || size > t.size() {
		return nil, fmt.Errorf("auditlog: no leaf %d in a tree of size %d", index, size)
	}
	nodes, err := proof.Inclusion(uint64(index), uint64(size))
	if err != nil {
		return nil, fmt.Errorf("auditlog: %w", err)
	}
	return t.fetch(nodes)
}

func (t *tree) consistency(size1, size2 int64) ([][]byte, error) {
	if size1 < 0 || size1 > size2 || size2 > t.size() {
		return nil, fmt.Errorf("auditlog: no consistency proof from size %d to %d; the log has %d leaves", size1, size2, t.size())
	}
	nodes, err := proof.Consistency(uint64(size1), uint64(size2))
	if err != nil {
		return nil, fmt.Errorf("auditlog: %w", err)
	}
	return t.fetch(nodes)
}
