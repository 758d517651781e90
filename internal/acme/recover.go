package acme

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/store"
)

// An order is processing from the moment one finalize wins it until that
// finalize records the outcome. If the server stops in between, nothing
// else would ever move it: the client polls an order that stays
// processing. Run finds such orders and settles them.
const (
	// stuckAfter is how long an order may be processing before it is
	// taken for one whose server stopped: well past finalizeTimeout.
	stuckAfter = 5 * finalizeTimeout
	// recoverEvery is how often Run looks for stuck orders.
	recoverEvery = time.Minute
)

// Run settles orders left processing by a server that stopped: once at
// once (start-up) and then every minute, until ctx ends. Several servers
// may run it on one store: settling is compare-and-swap.
func (s *Server) Run(ctx context.Context) error {
	t := time.NewTicker(recoverEvery)
	defer t.Stop()
	for {
		if _, err := s.RunOnce(ctx); err != nil && ctx.Err() == nil {
			s.log.LogAttrs(ctx, slog.LevelError, "acme: settling stuck orders", slog.String("error", err.Error()))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// RunOnce settles every order processing for longer than stuckAfter and
// says how many it settled (not counting those another server settled
// first).
func (s *Server) RunOnce(ctx context.Context) (int, error) {
	recs, err := s.store.ACMEByStatus(ctx, store.ACMEOrder, statusProcessing, 0)
	if err != nil {
		return 0, err
	}
	settled := 0
	var errs []error
	for _, rec := range recs {
		o, err := s.loadOrder(ctx, rec.ID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if o.Status != statusProcessing || s.now().Sub(o.ProcessingSince) < stuckAfter {
			continue
		}
		won, err := s.settle(ctx, o)
		if err != nil {
			errs = append(errs, err)
		}
		if !won {
			continue
		}
		settled++
		s.log.LogAttrs(ctx, slog.LevelWarn, "acme: settled an order left processing", slog.String("order", o.ID),
			slog.String("status", o.Status), slog.String("serial", o.Serial))
	}
	return settled, errors.Join(errs...)
}

// settle moves an order out of processing when its finalize did not
// finish: to valid with the certificate issued for it if that issuance
// committed, else back to ready (invalid once the order has expired) with
// an error saying what happened. It is compare-and-swap from processing,
// so of several servers settling one order one wins, and the others leave
// it be; won says whether this call settled it.
func (s *Server) settle(ctx context.Context, o *order) (won bool, err error) {
	leaf, rec, err := s.issuedFor(ctx, o)
	if err != nil {
		return false, err
	}
	switch {
	case leaf != nil:
		o.settled(statusValid)
		o.Serial, o.Chain, o.Error = rec.Serial, chainPEM(leaf, s.intermediatesOf(rec)), nil
	case s.now().After(o.Expires):
		o.settled(statusInvalid)
		o.Error = &problem{Type: errorNS + errServerInternal, Status: http.StatusInternalServerError,
			Detail: "finalizing this order was interrupted before a certificate was issued, and the order has expired: place a new order"}
	default:
		o.settled(statusReady)
		o.Error = &problem{Type: errorNS + errServerInternal, Status: http.StatusInternalServerError,
			Detail: "finalizing this order was interrupted before a certificate was issued: finalize it again"}
	}
	err = s.update(ctx, o.record(), statusProcessing)
	if errors.Is(err, store.ErrConflict) {
		return false, nil // settled by someone else
	}
	return err == nil, err
}

// issuedFor finds the certificate issued for a processing order, if its
// issuance committed: one the account obtained for the order's identity
// since the finalize began, for the key of the CSR the finalize sent.
// Nothing when the order keeps no CSR (it was finalized by an older mica).
func (s *Server) issuedFor(ctx context.Context, o *order) (*x509.Certificate, store.Certificate, error) {
	if len(o.CSR) == 0 {
		return nil, store.Certificate{}, nil
	}
	csr, err := x509.ParseCertificateRequest(o.CSR)
	if err != nil {
		return nil, store.Certificate{}, nil // never issued: the authority parses it the same way
	}
	key, ok := csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	id, _, prob := orderIdentity(o.Identifiers)
	if !ok || prob != nil {
		return nil, store.Certificate{}, nil
	}
	actor := authority.ACMEPrincipalPrefix + s.accountURL(o.Account)
	f := store.EventFilter{Actions: []store.Action{store.ActionCertIssued, store.ActionCertRenewed},
		Identity: id.Primary(), Since: o.ProcessingSince.Add(-clockSkew)}
	for {
		evs, err := s.store.Events(ctx, f)
		if err != nil {
			return nil, store.Certificate{}, fmt.Errorf("acme: looking for the certificate of order %s: %w", o.ID, err)
		}
		for _, ev := range evs {
			f.AfterSeq = ev.Seq
			if ev.Actor != actor || ev.Serial == "" {
				continue
			}
			rec, err := s.store.Certificate(ctx, ev.Serial)
			if err != nil {
				return nil, store.Certificate{}, fmt.Errorf("acme: reading certificate %s for order %s: %w", ev.Serial, o.ID, err)
			}
			leaf, err := x509.ParseCertificate(rec.DER)
			if err == nil && key.Equal(leaf.PublicKey) {
				return leaf, rec, nil
			}
		}
		if len(evs) == 0 {
			return nil, store.Certificate{}, nil
		}
	}
}

// intermediatesOf is the chain above a recorded certificate: the
// intermediate whose fingerprint the record names.
func (s *Server) intermediatesOf(rec store.Certificate) []*x509.Certificate {
	_, inters := s.auth.Bundle()
	for _, c := range inters {
		if authority.Fingerprint(c.Raw) == rec.Issuer {
			return []*x509.Certificate{c}
		}
	}
	return nil
}
