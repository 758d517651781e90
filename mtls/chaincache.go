package mtls

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"sync"
	"time"

	"github.com/mica-pki/mica/identity"
)

// chainCache remembers chains that verified, so a peer that comes back —
// on a resumed session or a new connection with the same certificate —
// costs a hash and a map lookup instead of signature checks. Chain
// verification depends only on the certificates presented, the roots and
// the time; an entry is used only with the same roots pool and inside the
// validity of every certificate of its chain. Revocation and authorization
// are not cached: they run on every handshake.
type chainCache struct {
	mu      sync.Mutex
	entries map[[sha256.Size]byte]*chainEntry
}

type chainEntry struct {
	roots               *x509.CertPool
	chain               []*x509.Certificate // leaf first, root last
	id                  identity.Identity
	notBefore, notAfter time.Time // the window in which every certificate of chain is valid
}

// maxCachedChains bounds the cache; only chains that verified get in.
const maxCachedChains = 4096

// chainKey identifies the certificates a peer presented, in order, and the
// usages they were verified for.
func chainKey(certs []*x509.Certificate, usages []x509.ExtKeyUsage) [sha256.Size]byte {
	h := sha256.New()
	var n [4]byte
	for _, u := range usages {
		binary.BigEndian.PutUint32(n[:], uint32(u))
		h.Write(n[:])
	}
	binary.BigEndian.PutUint32(n[:], 0xffffffff)
	h.Write(n[:])
	for _, c := range certs {
		binary.BigEndian.PutUint32(n[:], uint32(len(c.Raw)))
		h.Write(n[:])
		h.Write(c.Raw)
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

func (cc *chainCache) get(key [sha256.Size]byte, roots *x509.CertPool, now time.Time) *chainEntry {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	e := cc.entries[key]
	if e == nil {
		return nil
	}
	if e.roots != roots || now.Before(e.notBefore) || now.After(e.notAfter) {
		delete(cc.entries, key)
		return nil
	}
	return e
}

func (cc *chainCache) put(key [sha256.Size]byte, roots *x509.CertPool, chain []*x509.Certificate, id identity.Identity) {
	e := &chainEntry{roots: roots, chain: chain, id: id}
	for i, c := range chain {
		if i == 0 || c.NotBefore.After(e.notBefore) {
			e.notBefore = c.NotBefore
		}
		if i == 0 || c.NotAfter.Before(e.notAfter) {
			e.notAfter = c.NotAfter
		}
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.entries == nil {
		cc.entries = map[[sha256.Size]byte]*chainEntry{}
	}
	if len(cc.entries) >= maxCachedChains {
		for k := range cc.entries { // an arbitrary one: map order is random
			delete(cc.entries, k)
			break
		}
	}
	cc.entries[key] = e
}
