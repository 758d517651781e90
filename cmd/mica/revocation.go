package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/crl"
	"github.com/mica-pki/mica/internal/feed"
	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/ocsp"
	"github.com/mica-pki/mica/internal/telemetry"
	"github.com/mica-pki/mica/revocation"
)

// ocspPath is where the OCSP responder answers, under public_url.
const ocspPath = "/ocsp"

// revocationOutputs are the three ways a revocation leaves the server: the
// push feed, the CRL and OCSP. The feed follows the store and tells the
// other two what changed.
type revocationOutputs struct {
	hub     *feed.Hub
	crl     *crl.Service
	rootCRL *crl.Static // the root's CRL, signed offline
	ocsp    *ocsp.Responder
}

// newRevocationOutputs wires the outputs for the running intermediate and
// builds the first CRL, so that everything answers from the first request.
func newRevocationOutputs(ctx context.Context, p *parts, log *slog.Logger) (*revocationOutputs, error) {
	feedMetrics, err := telemetry.NewFeedMetrics(p.registry)
	if err != nil {
		return nil, err
	}
	issuerID := authority.Fingerprint(p.hierarchy.Intermediate.Raw)
	crlSvc, err := crl.New(crl.Config{Source: p.store, Issuer: p.hierarchy.Intermediate, Signer: p.hierarchy.IntermediateKey,
		IssuerID: issuerID, Lint: issuance.LintCRL, Logger: log})
	if err != nil {
		return nil, err
	}
	resp, err := ocsp.New(ocsp.Config{Source: p.store, Issuer: p.hierarchy.Intermediate, IssuerSigner: p.hierarchy.IntermediateKey,
		IssuerID: issuerID, Sign: issuance.CheckAndSign, Logger: log})
	if err != nil {
		return nil, err
	}
	hub, err := feed.New(feed.Config{Source: p.store, Logger: log, Delivered: feedMetrics.Delivered, OnEvent: func(e revocation.Event) {
		if e.Kind == revocation.KindRevoked {
			crlSvc.Changed()
			resp.Changed(context.WithoutCancel(ctx), e.Serial)
		}
	}})
	if err != nil {
		return nil, err
	}
	if err := hub.Load(ctx); err != nil {
		return nil, err
	}
	if err := crlSvc.RunOnce(ctx); err != nil {
		return nil, err
	}
	p.revocations.set(hub.Changed)
	rootCRL := crl.NewStatic(filepath.Join(p.data.caDir(), RootCRLFile), p.hierarchy.Root, nil, log)
	return &revocationOutputs{hub: hub, crl: crlSvc, rootCRL: rootCRL, ocsp: resp}, nil
}

// run runs the hub, the CRL schedule and the OCSP re-signer until ctx ends
// or one fails, which stops the others.
func (r *revocationOutputs) run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for name, run := range map[string]func(context.Context) error{"feed": r.hub.Run, "crl": r.crl.Run, "ocsp": r.ocsp.Run} {
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
	mux.Handle("GET "+crl.Path(p.hierarchy.Intermediate), r.crl.Handler())
	mux.Handle("GET "+crl.Path(p.hierarchy.Root), r.rootCRL)
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
