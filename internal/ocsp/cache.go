package ocsp

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mica-pki/mica/internal/bytesize"
)

// DefaultCacheSize bounds the response cache unless the config says
// otherwise. One cached response costs 1,740–1,830 bytes of heap, most of
// it the DER, which carries the delegated responder certificate and the
// issuer's (BenchmarkCacheEntryBytes: the live heap after caching 20,000
// distinct certificates, less the one before, over 20,000; the range is
// whether a DER of about 1,280 bytes falls in the allocator's 1,280- or
// 1,408-byte size class, which the cache accounts, 1,790–1,890, see
// entryOverhead), so 32 MiB holds about 18,000 responses: the
// certificates a fleet asks about most, in a sixth of the server's soft
// memory limit (192 MiB, cmd/mica tuneRuntime). A response not cached
// costs an inventory read and a signature (together about 35 µs with an
// inventory in memory, BenchmarkCacheMiss), not an error.
const DefaultCacheSize = 32 << 20

// MinCacheSize is the smallest bound a config may set: about 580
// responses. Below that the cache would hold too few to spare signatures.
const MinCacheSize = 1 << 20

// entryOverhead is what one cached response costs the heap besides the
// allocations sizeOf counts (the DER, the CertID it is cached by, the
// serial and the ETag): the slot and the cached struct, and the response's
// share of the two maps' tables. Measured, not derived: filling caches
// with 500 to 40,000 distinct certificates (P-256 responder, SHA-1
// CertIDs, 16-octet serials, Go 1.26 on amd64), the heap grew by
// 1,720–1,755 bytes a response, of which sizeOf counts 1,448–1,456 (a
// 1,280-byte DER allocation), leaving 264–303 that vary with the maps'
// fill. 336 errs on the side of the bound (by 2–4%);
// TestCacheAccountsForItsMemory fails when the heap grows by more than
// the cache accounts.
const entryOverhead = 336

// Settings is mica.yaml's ocsp section:
//
//	ocsp:
//	  cache_size: 32MiB   # signed responses kept in memory, every issuing CA's together
type Settings struct {
	CacheSize bytesize.Size `yaml:"cache_size,omitempty"`
}

// CacheBytes is the cache bound the settings ask for: DefaultCacheSize
// when none is given, an error when it is below MinCacheSize.
func (s Settings) CacheBytes() (int64, error) {
	switch n := s.CacheSize.Bytes(); {
	case n == 0:
		return DefaultCacheSize, nil
	case n < MinCacheSize:
		return 0, fmt.Errorf("ocsp: cache_size %v is below the smallest, %v: give at least that (each cached response takes about 1.8KiB), or leave it out for the default %v",
			s.CacheSize, bytesize.Size(MinCacheSize), bytesize.Size(DefaultCacheSize))
	default:
		return n, nil
	}
}

// Cache holds signed responses, by CertID, for the responders that share
// it, within a bound on the bytes they take. Responders of several issuing
// CAs share one so that the operator's bound is one number: a CertID names
// its issuer, so their keys never meet.
//
// When a new response would pass the bound, the least recently asked for
// go first, chosen by the clock (second-chance) algorithm: a request
// marks its slot used, and the hand clears marks until it finds a slot
// without one. That way a hit takes only the read lock, as a plain map
// would, and a sweep through every certificate, each asked about once,
// evicts its own responses before those asked about again and again
// (TestCacheKeepsWhatIsAskedFor).
type Cache struct {
	max int64

	// changes counts announced status changes (Changed). A response
	// signed from a status read before one is not stored: it may be the
	// good response of a certificate just revoked.
	changes atomic.Uint64

	mu       sync.RWMutex
	byID     map[string]*slot // by CertID DER
	bySerial map[string]*slot // a serial's first slot; the rest follow sameSerial
	hand     *slot            // the clock's hand on the ring of slots; nil when empty
	bytes    int64
	evicted  uint64
}

// slot is one cached response, linked into the ring and its serial's
// chain.
type slot struct {
	key        string
	owner      *Responder
	resp       *cached // replaced whole under Cache.mu (write); read under it (read)
	size       int64
	used       atomic.Bool // asked for since the hand last passed
	prev, next *slot
	sameSerial *slot
}

// NewCache returns an empty cache of at most maxBytes (MinCacheSize at
// least).
func NewCache(maxBytes int64) *Cache {
	return &Cache{max: max(maxBytes, MinCacheSize), byID: map[string]*slot{}, bySerial: map[string]*slot{}}
}

// sizeOf is what key's response c costs, as accounted against the bound:
// the DER's allocation (its capacity: sign gives it one of its own, which
// append rounded up to the allocator's size class), the strings' lengths
// rounded up as the allocator's small size classes are, and entryOverhead.
func sizeOf(key string, c *cached) int64 {
	return entryOverhead + int64(cap(c.der)+roundUp16(len(key))+roundUp16(len(c.serial))+roundUp16(len(c.etag)))
}

func roundUp16(n int) int { return (n + 15) &^ 15 }

// get returns the response cached for certID and marks it used; nil when
// none is.
func (cc *Cache) get(certID []byte) *cached {
	cc.mu.RLock()
	defer cc.mu.RUnlock()
	s := cc.byID[string(certID)]
	if s == nil {
		return nil
	}
	if !s.used.Load() { // a hot entry's cache line is only read
		s.used.Store(true)
	}
	return s.resp
}

// peek is get for re-signing: it does not count as a request.
func (cc *Cache) peek(owner *Responder, key string) *cached {
	cc.mu.RLock()
	defer cc.mu.RUnlock()
	if s := cc.byID[key]; s != nil && s.owner == owner {
		return s.resp
	}
	return nil
}

// seen is the count of changes announced so far, read before a status is.
func (cc *Cache) seen() uint64 { return cc.changes.Load() }

// put caches c for key, in place of any response there, making room by
// evicting, unless a change was announced after seen, c alone would pass
// the bound or owner was retired (drop ran or runs after this). It
// reports whether c was stored.
func (cc *Cache) put(owner *Responder, key string, c *cached, seen uint64) bool {
	size := sizeOf(key, c)
	if size > cc.max {
		return false
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.changes.Load() != seen || owner.retired.Load() {
		return false
	}
	if s := cc.byID[key]; s != nil {
		cc.bytes += size - s.size
		s.owner, s.resp, s.size = owner, c, size
		cc.evict(s)
		return true
	}
	s := &slot{key: key, owner: owner, resp: c, size: size}
	cc.byID[key] = s
	s.sameSerial = cc.bySerial[c.serial]
	cc.bySerial[c.serial] = s
	if cc.hand == nil {
		s.prev, s.next = s, s
		cc.hand = s
	} else {
		// Just behind the hand: the last slot it reaches.
		s.prev, s.next = cc.hand.prev, cc.hand
		cc.hand.prev.next = s
		cc.hand.prev = s
	}
	cc.bytes += size
	cc.evict(s)
	return true
}

// refresh replaces key's response with c if key is still cached for
// owner and no change was announced after seen; always, when seen is
// whatever. It reports whether c was stored.
func (cc *Cache) refresh(owner *Responder, key string, c *cached, seen uint64) bool {
	size := sizeOf(key, c)
	cc.mu.Lock()
	defer cc.mu.Unlock()
	s := cc.byID[key]
	if s == nil || s.owner != owner || (seen != whatever && cc.changes.Load() != seen) {
		return false
	}
	if size > cc.max {
		cc.remove(s)
		return false
	}
	cc.bytes += size - s.size
	s.resp, s.size = c, size
	cc.evict(s)
	return true
}

// whatever, as refresh's seen, stores whatever changes were announced:
// for the re-signing of a change itself, whose status was read after it.
const whatever = ^uint64(0)

// changed announces that serial's status changed and returns the keys
// owner has cached for it, to re-sign. Counting the change and listing
// the keys under one lock means a response signed before it is either
// listed here or refused by put.
func (cc *Cache) changed(owner *Responder, serial string) []string {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.changes.Add(1)
	var keys []string
	for s := cc.bySerial[serial]; s != nil; s = s.sameSerial {
		if s.owner == owner {
			keys = append(keys, s.key)
		}
	}
	return keys
}

// keys lists the keys owner has cached whose response need says so
// about.
func (cc *Cache) keys(owner *Responder, need func(*cached) bool) []string {
	cc.mu.RLock()
	defer cc.mu.RUnlock()
	var keys []string
	cc.each(func(s *slot) {
		if s.owner == owner && need(s.resp) {
			keys = append(keys, s.key)
		}
	})
	return keys
}

// drop forgets owner's responses: its CA is no longer answered for.
// Retire owner first, so that put stores none after.
func (cc *Cache) drop(owner *Responder) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	var gone []*slot
	cc.each(func(s *slot) {
		if s.owner == owner {
			gone = append(gone, s)
		}
	})
	for _, s := range gone {
		cc.remove(s)
	}
}

// each calls fn on every slot; under mu.
func (cc *Cache) each(fn func(*slot)) {
	if cc.hand == nil {
		return
	}
	s := cc.hand
	for {
		next := s.next
		fn(s)
		if next == cc.hand {
			return
		}
		s = next
	}
}

// evict removes slots at the hand until the cache is within its bound,
// never keep (the slot just stored, which fits alone).
func (cc *Cache) evict(keep *slot) {
	for cc.bytes > cc.max && cc.hand != nil && (cc.hand != keep || keep.next != keep) {
		s := cc.hand
		switch {
		case s == keep:
			cc.hand = s.next
		case s.used.Load():
			s.used.Store(false)
			cc.hand = s.next
		default:
			cc.remove(s)
			cc.evicted++
		}
	}
}

// remove unlinks s from the ring, the maps and the count; under mu.
func (cc *Cache) remove(s *slot) {
	if s.next == s {
		cc.hand = nil
	} else {
		s.prev.next, s.next.prev = s.next, s.prev
		if cc.hand == s {
			cc.hand = s.next
		}
	}
	s.prev, s.next = nil, nil
	delete(cc.byID, s.key)
	serial := s.resp.serial
	if head := cc.bySerial[serial]; head == s {
		if s.sameSerial == nil {
			delete(cc.bySerial, serial)
		} else {
			cc.bySerial[serial] = s.sameSerial
		}
	} else {
		for p := head; p != nil; p = p.sameSerial {
			if p.sameSerial == s {
				p.sameSerial = s.sameSerial
				break
			}
		}
	}
	s.sameSerial = nil
	cc.bytes -= s.size
}

// CacheStats is the response cache as metrics see it.
type CacheStats struct {
	Responses int
	// Bytes is what the responses take, as accounted against MaxBytes
	// (their DER and keys, and a measured overhead for each).
	Bytes, MaxBytes int64
	// Evicted counts responses dropped to make room since the start.
	Evicted uint64
	// Oldest is the production time (thisUpdate) of the stalest cached
	// response; zero when the cache is empty. Run keeps it within half the
	// validity, so an older one means re-signing has stopped.
	Oldest time.Time
}

// Stats reads the cache. It walks every entry under the read lock, so
// call it at scrape intervals, not per request.
func (cc *Cache) Stats() CacheStats {
	cc.mu.RLock()
	defer cc.mu.RUnlock()
	st := CacheStats{Responses: len(cc.byID), Bytes: cc.bytes, MaxBytes: cc.max, Evicted: cc.evicted}
	cc.each(func(s *slot) {
		if st.Oldest.IsZero() || s.resp.thisUpdate.Before(st.Oldest) {
			st.Oldest = s.resp.thisUpdate
		}
	})
	return st
}
