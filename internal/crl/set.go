package crl

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Set publishes the CRL of every CA in the bundle: during a rotation the
// prepared, active and retired intermediates (and roots whose key is
// online) each have their own, at their own Path. The set changes while it
// serves (Sync); a path no longer in it is answered 404.
type Set struct {
	routes atomic.Pointer[map[string]http.Handler]

	mu       sync.Mutex
	services []*Service
	ctx      context.Context // Run's, once it runs
	running  map[*Service]context.CancelFunc
	errs     chan error
}

// NewSet returns an empty set.
func NewSet() *Set {
	s := &Set{running: map[*Service]context.CancelFunc{}, errs: make(chan error, 1)}
	s.routes.Store(&map[string]http.Handler{})
	return s
}

// Sync replaces what the set publishes: a Service per CA whose key signs
// here (it should have built its first CRL, RunOnce, so that it answers at
// once), and static handlers by path (a root CRL signed offline), which
// take a path over a service's. Services no longer listed stop; new ones
// start when Run is running.
func (s *Set) Sync(services []*Service, static map[string]http.Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	routes := map[string]http.Handler{}
	keep := map[*Service]bool{}
	for _, svc := range services {
		routes[Path(svc.cfg.Issuer)] = svc.Handler()
		keep[svc] = true
		if _, ok := s.running[svc]; !ok && s.ctx != nil {
			s.start(svc)
		}
	}
	for svc, stop := range s.running {
		if !keep[svc] {
			stop()
			delete(s.running, svc)
		}
	}
	for p, h := range static {
		routes[p] = h // a CRL signed elsewhere wins over the service's
	}
	s.services = append([]*Service(nil), services...)
	s.routes.Store(&routes)
}

func (s *Set) start(svc *Service) {
	ctx, cancel := context.WithCancel(s.ctx)
	s.running[svc] = cancel
	go func() {
		if err := svc.Run(ctx); err != nil {
			select {
			case s.errs <- err:
			default:
			}
		}
	}()
}

// Run keeps every CRL fresh (Service.Run each) until ctx ends.
func (s *Set) Run(ctx context.Context) error {
	s.mu.Lock()
	s.ctx = ctx
	for _, svc := range s.services {
		if _, ok := s.running[svc]; !ok {
			s.start(svc)
		}
	}
	s.mu.Unlock()
	select {
	case <-ctx.Done():
		return nil
	case err := <-s.errs:
		return err
	}
}

// Changed says the revocations changed: every CRL is rebuilt (each only
// lists its own issuer's).
func (s *Set) Changed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, svc := range s.services {
		svc.Changed()
	}
}

// Services are the services published, in the order Sync was given them.
func (s *Set) Services() []*Service {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Service(nil), s.services...)
}

// Handler serves every CRL of the set at its Path.
func (s *Set) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := (*s.routes.Load())[r.URL.Path]; h != nil {
			h.ServeHTTP(w, r)
			return
		}
		http.Error(w, "crl: no CA with this key identifier is in the bundle", http.StatusNotFound)
	})
}

// Serves reports whether the set has a CRL at path (crl.Path of a CA).
func (s *Set) Serves(path string) bool { return (*s.routes.Load())[path] != nil }

// Freshness is what the CRL metrics and alerts watch: the thisUpdate and
// nextUpdate of the CRL closest to its nextUpdate (the stalest), and the
// revoked certificates listed in every CRL of the set. Not ok before any
// has been built.
func (s *Set) Freshness() (thisUpdate, nextUpdate time.Time, entries int, ok bool) {
	var stalest *Published
	for _, svc := range s.Services() {
		c := svc.Current()
		if c == nil {
			continue
		}
		entries += c.Entries
		if stalest == nil || c.NextUpdate.Before(stalest.NextUpdate) {
			stalest = c
		}
	}
	if stalest == nil {
		return time.Time{}, time.Time{}, 0, false
	}
	return stalest.ThisUpdate, stalest.NextUpdate, entries, true
}
