package lru

import (
	"fmt"
	"sync"
	"testing"
)

func get(c *Cache[int], key string) int {
	var v int
	c.Do(key, func(p *int) { v = *p })
	return v
}

func set(c *Cache[int], key string, v int) { c.Do(key, func(p *int) { *p = v }) }

func TestEvictsLeastRecentlyUsed(t *testing.T) {
	c := New[int](3, nil)
	set(c, "a", 1)
	set(c, "b", 2)
	set(c, "c", 3)
	get(c, "a")    // a is now the most recent; b the least
	set(c, "d", 4) // evicts b
	if c.Len() != 3 {
		t.Fatalf("Len = %d, want 3", c.Len())
	}
	for key, want := range map[string]int{"a": 1, "c": 3, "d": 4} {
		if got := get(c, key); got != want {
			t.Errorf("%s = %d, want %d", key, got, want)
		}
	}
	if got := get(c, "b"); got != 0 {
		t.Errorf("b = %d after eviction, want a fresh zero value", got)
	}
}

func TestBoundHoldsForManyKeys(t *testing.T) {
	for _, capacity := range []int{1, 10, 64, 1000} {
		t.Run(fmt.Sprint(capacity), func(t *testing.T) {
			c := New[int](capacity, nil)
			for i := range 50 * capacity {
				set(c, fmt.Sprint("key-", i), i)
				if n := c.Len(); n > capacity {
					t.Fatalf("after %d keys Len = %d, over the capacity %d", i+1, n, capacity)
				}
			}
			if n := c.Len(); n < capacity*3/4 {
				t.Errorf("Len = %d: a full cache of capacity %d should hold most of it", n, capacity)
			}
		})
	}
}

func TestStaleEntriesAreDropped(t *testing.T) {
	c := New[int](10, func(v *int) bool { return *v < 0 }) // one shard: exact order
	set(c, "old1", -1)
	set(c, "old2", -1)
	set(c, "live", 5)
	set(c, "new", 1) // the two coldest are stale: dropped, though there is room
	if c.Len() != 2 {
		t.Fatalf("Len = %d, want 2 (stale entries dropped on insertion)", c.Len())
	}
	if get(c, "live") != 5 {
		t.Error("a live entry was dropped")
	}
}

func TestConcurrentUseOfOneKeyIsSerialised(t *testing.T) {
	c := New[int](1000, nil)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				c.Do("shared", func(v *int) { *v++ })
				set(c, fmt.Sprint(len(t.Name())), 1)
			}
		})
	}
	wg.Wait()
	if got := get(c, "shared"); got != 8000 {
		t.Fatalf("shared = %d, want 8000", got)
	}
}
