package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/bytesize"
	"github.com/mica-pki/mica/internal/crl"
	"github.com/mica-pki/mica/internal/feed"
	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/ocsp"
	"github.com/mica-pki/mica/internal/rotation"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/telemetry"
	"github.com/mica-pki/mica/revocation"
)

// ocspPath is where the OCSP responder answers, under public_url.
const ocspPath = "/ocsp"

// revocationOutputs are the three ways a revocation leaves the server: the
// push feed, the CRLs and OCSP. The feed follows the store and tells the
// other two what changed. There is a CRL for every CA in the bundle whose
// key signs here (the root's signed offline is published from its file),
// and an OCSP responder for every intermediate: they follow the CA's
// rotation (sync).
type revocationOutputs struct {
	p       *parts
	log     *slog.Logger
	hub     *feed.Hub
	crls    *crl.Set
	rootCRL *crl.Static // the data directory's root's CRL, signed offline
	ocsp    *ocsp.Responders
	// ocspCache holds every responder's signed responses, within
	// ocsp.cache_size.
	ocspCache *ocsp.Cache

	mu         sync.Mutex // serialises sync
	services   map[string]*crl.Service
	responders map[string]*ocsp.Responder
	statics    map[string]*crl.Static
}

// newRevocationOutputs wires the outputs for the CAs in the bundle and
// builds their first CRLs, so that everything answers from the first
// request.
func newRevocationOutputs(ctx context.Context, p *parts, log *slog.Logger) (*revocationOutputs, error) {
	feedMetrics, err := telemetry.NewFeedMetrics(p.registry)
	if err != nil {
		return nil, err
	}
	cacheBytes, err := p.cfg.OCSP.CacheBytes()
	if err != nil {
		return nil, err
	}
	if limit := debug.SetMemoryLimit(-1); cacheBytes > limit/2 {
		log.Warn("the OCSP response cache may take more than half the soft memory limit, and the collector then runs often: "+
			"raise GOMEMLIMIT by what you gave the cache, or lower ocsp.cache_size",
			slog.String("cache_size", bytesize.Format(cacheBytes)), slog.String("memory_limit", bytesize.Format(limit)))
	}
	r := &revocationOutputs{p: p, log: log, crls: crl.NewSet(), ocsp: ocsp.NewResponders(), ocspCache: ocsp.NewCache(cacheBytes),
		rootCRL:  crl.NewStatic(filepath.Join(p.data.caDir(), RootCRLFile), p.hierarchy.Root, nil, log),
		services: map[string]*crl.Service{}, responders: map[string]*ocsp.Responder{}, statics: map[string]*crl.Static{}}
	hub, err := feed.New(feed.Config{Source: p.store, Logger: log, Delivered: feedMetrics.Delivered, OnEvent: func(e revocation.Event) {
		if e.Kind == revocation.KindRevoked {
			r.crls.Changed()
			r.ocsp.Changed(context.WithoutCancel(ctx), e.Serial)
		}
	}})
	if err != nil {
		return nil, err
	}
	if err := hub.Load(ctx); err != nil {
		return nil, err
	}
	r.hub = hub
	if err := r.sync(ctx); err != nil {
		return nil, err
	}
	p.revocations.set(hub.Changed)
	return r, nil
}

// sync makes the CRLs and OCSP responders those of the CAs in the bundle
// now: a new CA's first CRL is built (and its responder certified) before
// it is published; a removed CA's stop.
func (r *revocationOutputs) sync(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var svcs []*crl.Service
	var resps []*ocsp.Responder
	static := map[string]http.Handler{}
	live := map[string]bool{}
	for _, c := range r.p.rotation.CAs() {
		live[c.ID] = true
		switch {
		case c.CRL != nil:
			svc := r.services[c.ID]
			if svc == nil {
				var err error
				svc, err = crl.New(crl.Config{Source: r.p.store, Issuer: c.Cert, Signer: c.CRL, IssuerID: c.ID, Lint: issuance.LintCRL, Logger: r.log})
				if err == nil {
					err = svc.RunOnce(ctx)
				}
				if err != nil {
					return fmt.Errorf("the CRL of %q: %w", c.Cert.Subject.CommonName, err)
				}
				r.services[c.ID] = svc
			}
			svcs = append(svcs, svc)
			if c.Cert.Equal(r.p.hierarchy.Root) {
				// A root CRL signed at the ceremony (listing withdrawn
				// intermediates) wins over the one this server signs.
				static[crl.Path(c.Cert)] = preferStatic(r.rootCRL, svc.Handler())
			}
		case c.Cert.Equal(r.p.hierarchy.Root):
			static[crl.Path(c.Cert)] = r.rootCRL
		case c.Kind == store.SlotRoot:
			// A root kept offline, other than the data directory's own:
			// its CRL signed at the ceremony, named by its key identifier.
			st := r.statics[c.ID]
			if st == nil {
				st = crl.NewStatic(filepath.Join(r.p.data.caDir(), rootCRLFileOf(c.Cert)), c.Cert, nil, r.log)
				r.statics[c.ID] = st
			}
			static[crl.Path(c.Cert)] = st
		}
		// A prepared intermediate has signed nothing yet, so there is
		// nothing to answer for; it gets its responder (whose certificate
		// it signs) once it activates, after its propagation.
		if c.Kind != store.SlotIntermediate || c.State == store.SlotPrepared || r.p.rotation.Issuer(c.ID) == nil {
			continue
		}
		resp := r.responders[c.ID]
		if resp == nil {
			var err error
			resp, err = ocsp.New(ocsp.Config{Source: r.p.store, Issuer: c.Cert, IssuerID: c.ID, Responder: responderFor(r.p, c.Cert),
				Cache: r.ocspCache, Logger: r.log})
			if err != nil {
				return err
			}
			r.responders[c.ID] = resp
		}
		resps = append(resps, resp)
	}
	for id := range r.services {
		if !live[id] {
			delete(r.services, id)
		}
	}
	for id := range r.responders {
		if !live[id] {
			delete(r.responders, id)
		}
	}
	r.crls.Sync(svcs, static)
	r.ocsp.Set(resps)
	return nil
}

// publishesCRL reports whether sync gives c a CRL: one this server signs,
// or a root's, from its file. sync's cases are these three.
func (r *revocationOutputs) publishesCRL(c rotation.CA) bool {
	return c.CRL != nil || c.Cert.Equal(r.p.hierarchy.Root) || c.Kind == store.SlotRoot
}

// inBundle reports whether path is the CRL path of a CA of the bundle
// whose CRL this server serves once synced.
func (r *revocationOutputs) inBundle(path string) bool {
	for _, c := range r.p.rotation.CAs() {
		// A cross-certificate shares its root's key, and so its path.
		if crl.Path(c.Cert) == path && r.publishesCRL(c) {
			return true
		}
	}
	return false
}

// preferStatic serves the CRL in the file while there is one, else live's.
func preferStatic(file *crl.Static, live http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if _, _, ok := file.Current(); ok {
			file.ServeHTTP(w, req)
			return
		}
		live.ServeHTTP(w, req)
	})
}

// run runs the hub, the CRL schedule and the OCSP re-signer until ctx ends
// or one fails, which stops the others.
func (r *revocationOutputs) run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for name, run := range map[string]func(context.Context) error{"feed": r.hub.Run, "crl": r.crls.Run, "ocsp": r.ocsp.Run} {
		g.Go(func() error {
			if err := run(gctx); err != nil && gctx.Err() == nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// handler is the plain-HTTP side: CRL and OCSP, public by design (RFC 5280
// and 6960 relying parties fetch them without credentials).
func (r *revocationOutputs) handler(p *parts) http.Handler {
	mux := http.NewServeMux()
	crls := r.crls.Handler()
	mux.Handle("GET /crl/", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !r.crls.Serves(req.URL.Path) && r.inBundle(req.URL.Path) {
			// The rotation has just published this CA in the bundle and the
			// sync that builds its CRL, which follows, has not run yet: run
			// it now rather than answer 404 to a relying party that fetches
			// the CRL of every CA in the bundle it just read.
			if err := r.sync(req.Context()); err != nil {
				r.log.Warn("building the CRL of a CA just added to the bundle", slog.String("error", err.Error()))
			}
		}
		crls.ServeHTTP(w, req)
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	ocspHandler := r.ocsp.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		// OCSP bypasses the mux: a base64 GET request may contain "//",
		// which ServeMux would answer with a redirect to a cleaned path.
		if req.URL.Path == ocspPath || strings.HasPrefix(req.URL.Path, ocspPath+"/") {
			req.Pattern = ocspPath // for the request metrics' route label
			ocspHandler.ServeHTTP(w, req)
			return
		}
		mux.ServeHTTP(w, req)
	})
}

// revocationServer is the plain-HTTP server for CRL and OCSP.
func revocationServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
}

// responderFor is how an issuing CA certifies its OCSP responder's keys:
// through the authority, under the reserved OCSP profile, so that the
// responder certificate is linted and recorded like any other.
func responderFor(p *parts, issuer *x509.Certificate) ocsp.ResponderFunc {
	id := authority.Fingerprint(issuer.Raw)
	return func(ctx context.Context, pub crypto.PublicKey) (*x509.Certificate, error) {
		spiffe, err := identity.Parse("spiffe://" + p.cfg.TrustDomain + authority.OCSPPathPrefix + hex.EncodeToString(issuer.SubjectKeyId))
		if err != nil {
			return nil, err
		}
		iss, err := p.authority.IssueOCSPResponder(ctx, id, spiffe, pub)
		if err != nil {
			return nil, err
		}
		return iss.Certificate, nil
	}
}
