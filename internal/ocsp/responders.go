package ocsp

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Responders answers for every issuing CA in the bundle, one Responder
// (and one delegated responder certificate) each: during a rotation the
// retired intermediate's certificates are still asked about. The set
// changes while it serves (Set); requests go to the responder of the
// issuer they name, others are answered unauthorized.
type Responders struct {
	list atomic.Pointer[[]*Responder]

	mu      sync.Mutex
	ctx     context.Context // Run's, once it runs
	running map[*Responder]context.CancelFunc
	errs    chan error
}

// NewResponders returns an empty set.
func NewResponders() *Responders {
	m := &Responders{running: map[*Responder]context.CancelFunc{}, errs: make(chan error, 1)}
	m.list.Store(&[]*Responder{})
	return m
}

// Set replaces the responders: those no longer listed stop re-signing and
// their cached responses are dropped, new ones start (when Run is
// running).
func (m *Responders) Set(rs []*Responder) {
	m.mu.Lock()
	defer m.mu.Unlock()
	list := append([]*Responder(nil), rs...)
	old := *m.list.Swap(&list)
	keep := map[*Responder]bool{}
	for _, r := range list {
		keep[r] = true
		r.retired.Store(false)
		if _, ok := m.running[r]; !ok && m.ctx != nil {
			m.start(r)
		}
	}
	for r, stop := range m.running {
		if !keep[r] {
			stop()
			delete(m.running, r)
		}
	}
	for _, r := range old {
		if !keep[r] {
			r.retired.Store(true)
			r.cache.drop(r)
		}
	}
}

func (m *Responders) start(r *Responder) {
	ctx, cancel := context.WithCancel(m.ctx)
	m.running[r] = cancel
	go func() {
		if err := r.Run(ctx); err != nil {
			select {
			case m.errs <- err:
			default:
			}
		}
	}()
}

// Run re-signs every responder's responses until ctx ends (see
// Responder.Run).
func (m *Responders) Run(ctx context.Context) error {
	m.mu.Lock()
	m.ctx = ctx
	for _, r := range *m.list.Load() {
		if _, ok := m.running[r]; !ok {
			m.start(r)
		}
	}
	m.mu.Unlock()
	select {
	case <-ctx.Done():
		return nil
	case err := <-m.errs:
		return err
	}
}

// Changed re-signs the cached responses for serial in every responder.
func (m *Responders) Changed(ctx context.Context, serial string) {
	for _, r := range *m.list.Load() {
		r.Changed(ctx, serial)
	}
}

// Respond answers one DER-encoded OCSPRequest.
func (m *Responders) Respond(ctx context.Context, der []byte) []byte {
	resp, _ := m.respond(ctx, der)
	return resp
}

func (m *Responders) respond(ctx context.Context, der []byte) ([]byte, *cached) {
	req, err := parseRequest(der)
	if err != nil {
		return errorResponse(statusMalformedRequest), nil
	}
	for _, r := range *m.list.Load() {
		if r.matches(req) {
			return r.answer(ctx, req)
		}
	}
	return errorResponse(statusUnauthorized), nil
}

// Handler serves every responder at one URL (see Responder.Handler).
func (m *Responders) Handler() http.Handler { return handler(m.respond, m.now) }

// now is the responders' clock (they share the server's), for the caching
// headers.
func (m *Responders) now() time.Time {
	if list := *m.list.Load(); len(list) > 0 {
		return list[0].cfg.Clock()
	}
	return time.Now()
}

// CacheStats adds up the responders' caches, each counted once however
// many share it.
func (m *Responders) CacheStats() CacheStats {
	var st CacheStats
	seen := map[*Cache]bool{}
	for _, r := range *m.list.Load() {
		if seen[r.cache] {
			continue
		}
		seen[r.cache] = true
		s := r.CacheStats()
		st.Responses += s.Responses
		st.Bytes += s.Bytes
		st.MaxBytes += s.MaxBytes
		st.Evicted += s.Evicted
		if !s.Oldest.IsZero() && (st.Oldest.IsZero() || s.Oldest.Before(st.Oldest)) {
			st.Oldest = s.Oldest
		}
	}
	return st
}

// Responders lists the responders in use.
func (m *Responders) Responders() []*Responder { return *m.list.Load() }
