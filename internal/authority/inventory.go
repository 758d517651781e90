package authority

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/mica-pki/mica/internal/store"
)

// ListCertificates reads the inventory.
func (a *Authority) ListCertificates(ctx context.Context, p Principal, f store.Filter) ([]store.Certificate, error) {
	if err := a.Authorize(p, ActCertList, Resource{}); err != nil {
		return nil, err
	}
	if f.Now.IsZero() {
		f.Now = a.now()
	}
	certs, err := a.store.ListCertificates(ctx, f)
	if err != nil {
		return nil, newError(KindInternal, err, "could not read the inventory: %v", err)
	}
	return certs, nil
}

// Certificate reads one inventory record. A principal may always read its
// own certificate.
func (a *Authority) Certificate(ctx context.Context, p Principal, serial string) (store.Certificate, error) {
	serial, err := ParseSerial(serial)
	if err != nil {
		return store.Certificate{}, err
	}
	if err := a.Authorize(p, ActCertRead, Resource{Serial: serial}); err != nil {
		return store.Certificate{}, err
	}
	rec, err := a.store.Certificate(ctx, serial)
	if errors.Is(err, store.ErrNotFound) {
		return rec, newError(KindNotFound, err, "no certificate with serial %s: list them with `mica cert list`", serial)
	}
	if err != nil {
		return rec, newError(KindInternal, err, "could not read the inventory: %v", err)
	}
	return rec, nil
}

// Bundle is the trust bundle: the roots, and the intermediates they vouch for.
func (a *Authority) Bundle() (roots, intermediates []*x509.Certificate) {
	t := a.issuers.Trust()
	return t.Roots, t.Intermediates
}

// RecordSystemEvent records something mica did on its own behalf (CA
// created, policy loaded) in the same event log as every request.
func (a *Authority) RecordSystemEvent(ctx context.Context, action store.Action, detail string) error {
	ev := store.Event{Time: a.now(), Actor: "system", Action: action, Outcome: "ok", Detail: detail}
	if err := a.store.RecordEvent(ctx, &ev); err != nil {
		return fmt.Errorf("authority: recording %s: %w", action, err)
	}
	return nil
}
