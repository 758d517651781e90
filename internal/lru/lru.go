// Package lru is a bounded map for per-key state whose keys strangers can
// choose (client addresses, identities, accounts): it holds at most Max
// entries, evicts the least recently used first, and drops entries that no
// longer carry information (Stale) as new keys arrive, so no request
// pattern can make it grow without bound.
//
// It is sharded by key hash so that concurrent callers with different keys
// rarely wait for each other. Start at New and Cache.Do.
package lru

import (
	"hash/maphash"
	"sync"
)

// maxShards is how many independently locked parts a large cache has.
const maxShards = 16

// staleChecks is how many entries at the cold end an insertion looks at
// for stale ones to drop: enough to shrink after a spike, few enough to
// keep an insertion O(1).
const staleChecks = 2

// Cache maps string keys to values of type V.
type Cache[V any] struct {
	seed   maphash.Seed
	shards []shard[V]
	stale  func(*V) bool
}

type shard[V any] struct {
	mu   sync.Mutex
	m    map[string]*entry[V]
	root entry[V] // sentinel of a ring: root.next is the most recent, root.prev the least
	max  int
}

type entry[V any] struct {
	key        string
	val        V
	prev, next *entry[V]
}

// New returns a cache of at most capacity entries (at least 1). stale, when not
// nil, says an entry may be forgotten without changing any answer (a full
// token bucket, a window that has passed); it is called under the entry's
// shard lock and must not call into the cache.
func New[V any](capacity int, stale func(*V) bool) *Cache[V] {
	capacity = max(capacity, 1)
	n := maxShards
	if capacity < n*4 {
		n = 1 // a small cache is exact: one shard holds every entry
	}
	c := &Cache[V]{seed: maphash.MakeSeed(), shards: make([]shard[V], n), stale: stale}
	for i := range c.shards {
		s := &c.shards[i]
		s.max = capacity / n
		s.m = make(map[string]*entry[V])
		s.root.next, s.root.prev = &s.root, &s.root
	}
	return c
}

// Do calls fn with the value for key, under a lock that serialises every
// call for that key. A key not present gets a zero value first (evicting
// the least recently used entry of its shard when full). fn must not call
// into the cache.
func (c *Cache[V]) Do(key string, fn func(v *V)) {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[key]
	if ok {
		s.unlink(e)
	} else {
		e = s.insert(key, c.stale)
	}
	s.pushFront(e)
	fn(&e.val)
}

// Len is the number of entries held.
func (c *Cache[V]) Len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

func (c *Cache[V]) shard(key string) *shard[V] {
	if len(c.shards) == 1 {
		return &c.shards[0]
	}
	return &c.shards[maphash.String(c.seed, key)%uint64(len(c.shards))]
}

// insert makes room and returns a new, unlinked entry for key.
func (s *shard[V]) insert(key string, stale func(*V) bool) *entry[V] {
	if stale != nil {
		for i := 0; i < staleChecks && s.root.prev != &s.root; i++ {
			cold := s.root.prev
			if !stale(&cold.val) {
				break
			}
			s.remove(cold)
		}
	}
	if len(s.m) >= s.max {
		s.remove(s.root.prev)
	}
	e := &entry[V]{key: key}
	s.m[key] = e
	return e
}

func (s *shard[V]) remove(e *entry[V]) {
	s.unlink(e)
	delete(s.m, e.key)
}

func (s *shard[V]) unlink(e *entry[V]) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (s *shard[V]) pushFront(e *entry[V]) {
	e.prev, e.next = &s.root, s.root.next
	s.root.next.prev = e
	s.root.next = e
}
