// Package workload is an mtls.Source that takes this process's X509-SVID
// and trust bundle from the SPIFFE Workload API (the mica agent's socket,
// or any other implementation). It lives apart from package mtls so that a
// service that reads its credential from files pulls in no gRPC.
package workload

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/mica-pki/mica/mtls"
)

// Source takes the X509-SVID and the trust bundle of its trust domain
// from the SPIFFE Workload API. Updates are streamed: a rotated SVID or
// bundle is used from the next handshake on.
type Source struct {
	src   *workloadapi.X509Source
	cert  atomic.Pointer[svidCert]
	roots atomic.Pointer[bundleRoots]
}

// svidCert and bundleRoots remember what was built from which update, so a
// handshake converts nothing unless the Workload API sent something new.
type svidCert struct {
	svid *x509svid.SVID
	tls  *tls.Certificate
}

type bundleRoots struct {
	bundle *x509bundle.Bundle
	roots  []*x509.Certificate
}

var _ mtls.Source = (*Source)(nil)

// NewSource connects to the Workload API at addr (e.g.
// "unix:///run/mica/agent.sock") and waits, until ctx ends, for the first
// SVID and bundle.
func NewSource(ctx context.Context, addr string) (*Source, error) {
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(addr)))
	if err != nil {
		return nil, fmt.Errorf("workload: no X509-SVID from the Workload API at %s (%w): is the agent running, and is this process entitled to an identity?", addr, err)
	}
	return &Source{src: src}, nil
}

// Certificate returns the current X509-SVID with its key.
func (w *Source) Certificate() (*tls.Certificate, error) {
	svid, err := w.src.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("workload: %w", err)
	}
	if c := w.cert.Load(); c != nil && c.svid == svid {
		return c.tls, nil
	}
	tc := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, c := range svid.Certificates {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	w.cert.Store(&svidCert{svid: svid, tls: tc})
	return tc, nil
}

// Roots returns the X.509 authorities of the SVID's trust domain.
func (w *Source) Roots() []*x509.Certificate {
	svid, err := w.src.GetX509SVID()
	if err != nil {
		return nil
	}
	b, err := w.src.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
	if err != nil {
		return nil
	}
	if r := w.roots.Load(); r != nil && r.bundle == b {
		return r.roots
	}
	roots := b.X509Authorities()
	w.roots.Store(&bundleRoots{bundle: b, roots: roots})
	return roots
}

// Updated returns a channel that receives a value after the Workload API
// sent a new SVID or bundle (and it is in use); updates that arrive while
// one is waiting to be received are merged into it.
func (w *Source) Updated() <-chan struct{} {
	return w.src.Updated()
}

// Close ends the Workload API stream.
func (w *Source) Close() error {
	return w.src.Close()
}
