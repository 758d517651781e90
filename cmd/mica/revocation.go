package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mica-pki/mica/identity"
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
	crlSvc, err := crl.New(crl.Config{Source: p.store, Issuer: p.hierarchy.Intermediate, Signer: issuance.NewCRLSigner(p.hierarchy.Intermediate, p.hierarchy.IntermediateKey),
		IssuerID: issuerID, Lint: lintSmallCRL, Logger: log})
	if err != nil {
		return nil, err
	}
	resp, err := ocsp.New(ocsp.Config{Source: p.store, Issuer: p.hierarchy.Intermediate, IssuerID: issuerID,
		Responder: responderFor(p, p.hierarchy.Intermediate), Logger: log})
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

// lintSmallCRL lints CRLs of up to 100,000 entries before they are
// published. Beyond that zlint's parse of the whole list costs more than a
// rebuild; the encoder's tests lint its output at every size that matters.
func lintSmallCRL(der []byte) error {
	if len(der) > 100_000*48 {
		return nil
	}
	return issuance.LintCRL(der)
}

// run runs the hub, the CRL schedule and the OCSP re-signer until ctx ends
// or one fails; a failure stops the others through cancel.
func (r *revocationOutputs) run(ctx context.Context, cancel context.CancelCauseFunc) *sync.WaitGroup {
	var wg sync.WaitGroup
	for name, run := range map[string]func(context.Context) error{"feed": r.hub.Run, "crl": r.crl.Run, "ocsp": r.ocsp.Run} {
		wg.Go(func() {
			if err := run(ctx); err != nil {
				cancel(fmt.Errorf("%s: %w", name, err))
			}
		})
	}
	return &wg
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

// serveHTTP starts the plain-HTTP listener, or nothing for "off".
func serveHTTP(addr string, h http.Handler, log *slog.Logger) (*http.Server, string, <-chan error, error) {
	errc := make(chan error, 1)
	if addr == "off" {
		return nil, "", errc, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", nil, fmt.Errorf("cannot listen on %s for CRL and OCSP: %w (choose another with --http-listen, or off)", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	return srv, "http://" + ln.Addr().String(), errc, nil
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
