package mtls

import (
	"crypto/sha256"
	"crypto/x509"
	"sync/atomic"
)

// poolCache turns the Source's roots into an x509.CertPool once per
// change, not once per handshake. A Source that returns the same slice
// until its roots change costs one pointer comparison; one that returns a
// fresh slice each time costs a hash of the roots.
type poolCache struct {
	cur atomic.Pointer[poolEntry]
}

type poolEntry struct {
	data *(*x509.Certificate) // &roots[0] of the slice the pool was made from
	n    int
	sum  [sha256.Size]byte
	pool *x509.CertPool
}

func (pc *poolCache) get(roots []*x509.Certificate) *x509.CertPool {
	if len(roots) == 0 {
		return nil
	}
	e := pc.cur.Load()
	if e != nil && e.data == &roots[0] && e.n == len(roots) {
		return e.pool
	}
	sum := rootsSum(roots)
	if e != nil && e.sum == sum {
		pc.cur.Store(&poolEntry{data: &roots[0], n: len(roots), sum: sum, pool: e.pool})
		return e.pool
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	pc.cur.Store(&poolEntry{data: &roots[0], n: len(roots), sum: sum, pool: pool})
	return pool
}

func rootsSum(roots []*x509.Certificate) [sha256.Size]byte {
	h := sha256.New()
	for _, r := range roots {
		s := sha256.Sum256(r.Raw)
		h.Write(s[:])
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}
