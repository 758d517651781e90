package rotation

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/keys/custody"
	"github.com/mica-pki/mica/internal/store"
)

// The offline root's part of a rotation: the root machine makes a new root
// or signs the next intermediate, and the server records what it brings as
// a prepared slot, which then propagates and activates like any other.

func slotOf(slots []store.CASlot, pick func(store.CASlot) bool) (store.CASlot, bool) {
	for _, s := range slots {
		if pick(s) {
			return s, true
		}
	}
	return store.CASlot{}, false
}

// ImportRoot records a root made at the offline-root ceremony as the
// prepared root, after checking its cross-certificates with the active
// root: crossFrom must be root certified by the active root's key, crossTo
// the active root certified by root's key. The key stays on the root
// machine.
func ImportRoot(ctx context.Context, st Store, root, crossFrom, crossTo *x509.Certificate, actor string, now time.Time) (int64, error) {
	slots, err := st.CASlots(ctx)
	if err != nil {
		return 0, err
	}
	active, ok := slotOf(slots, func(s store.CASlot) bool { return s.Kind == store.SlotRoot && s.State == store.SlotActive })
	if !ok {
		return 0, errors.New("rotation: there is no active root to roll over from")
	}
	old, err := x509.ParseCertificate(active.Cert)
	if err != nil {
		return 0, err
	}
	same := func(a, b crypto.PublicKey) bool {
		k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
		return ok && k.Equal(b)
	}
	switch {
	case !root.IsCA || root.CheckSignatureFrom(root) != nil:
		return 0, errors.New("rotation: the new root is not a self-signed CA certificate")
	case crossFrom.CheckSignatureFrom(old) != nil || !same(crossFrom.PublicKey, root.PublicKey):
		return 0, fmt.Errorf("rotation: the cross-certificate from the previous root does not certify the new root's key with active root %d's key: bring root-cross-from-previous.pem of this rollover", active.ID)
	case crossTo.CheckSignatureFrom(root) != nil || !same(crossTo.PublicKey, old.PublicKey):
		return 0, fmt.Errorf("rotation: the cross-certificate to the previous root does not certify active root %d's key with the new root's key: bring root-cross-to-previous.pem of this rollover", active.ID)
	}
	for _, c := range []*x509.Certificate{root, crossFrom, crossTo} {
		if err := issuance.Lint(c.Raw); err != nil {
			return 0, fmt.Errorf("rotation: %q: %w", c.Subject.CommonName, err)
		}
	}
	s := &store.CASlot{Kind: store.SlotRoot, State: store.SlotPrepared, Cert: root.Raw, Fingerprint: authority.Fingerprint(root.Raw),
		Parent: active.ID, CrossFromPrevious: crossFrom.Raw, CrossToPrevious: crossTo.Raw,
		NotBefore: root.NotBefore, NotAfter: root.NotAfter, PreparedAt: now}
	ev := &store.Event{Time: now, Actor: actor, Action: store.ActionCASlotPrepared, Outcome: "ok", Fingerprint: s.Fingerprint,
		Detail: fmt.Sprintf("root %q prepared and published, imported from the offline-root ceremony, cross-signed with root %d both ways, valid until %s; its key stays on the root machine",
			root.Subject.CommonName, active.ID, root.NotAfter.UTC().Format(time.RFC3339))}
	if err := st.AddCASlots(ctx, []*store.CASlot{s}, ev); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return 0, errors.New("rotation: a root is already prepared (or this one was imported before): see `mica ca status`")
		}
		return 0, err
	}
	return s.ID, nil
}

// ImportIntermediate records an intermediate signed at the offline-root
// ceremony (for a key this server made, named by key) as the prepared
// intermediate, signed by the newest root in the bundle.
func ImportIntermediate(ctx context.Context, st Store, cert *x509.Certificate, key custody.Ref, actor string, now time.Time) (int64, error) {
	slots, err := st.CASlots(ctx)
	if err != nil {
		return 0, err
	}
	var parent store.CASlot
	for _, s := range slots {
		if s.Kind != store.SlotRoot || (s.State != store.SlotActive && s.State != store.SlotPrepared) {
			continue
		}
		r, err := x509.ParseCertificate(s.Cert)
		if err == nil && cert.CheckSignatureFrom(r) == nil {
			parent = s
		}
	}
	if parent.ID == 0 {
		return 0, errors.New("rotation: the intermediate is not signed by the active or prepared root: sign it with the root in the bundle")
	}
	if !cert.IsCA || cert.MaxPathLen != 0 || len(cert.PermittedURIDomains) != 1 {
		return 0, errors.New("rotation: the certificate is not a mica intermediate (a CA of path length 0, constrained to one trust domain)")
	}
	if err := issuance.Lint(cert.Raw); err != nil {
		return 0, fmt.Errorf("rotation: the intermediate: %w", err)
	}
	s := &store.CASlot{Kind: store.SlotIntermediate, State: store.SlotPrepared, Cert: cert.Raw, Fingerprint: authority.Fingerprint(cert.Raw),
		Parent: parent.ID, KeyURI: key.URI, KeySealed: key.Sealed, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, PreparedAt: now}
	ev := &store.Event{Time: now, Actor: actor, Action: store.ActionCASlotPrepared, Outcome: "ok", Fingerprint: s.Fingerprint,
		Detail: fmt.Sprintf("intermediate %q prepared and published, signed at the offline-root ceremony by root %d, valid until %s, key %s",
			cert.Subject.CommonName, parent.ID, cert.NotAfter.UTC().Format(time.RFC3339), key)}
	if err := st.AddCASlots(ctx, []*store.CASlot{s}, ev); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return 0, errors.New("rotation: an intermediate is already prepared (or this one was imported before): see `mica ca status`")
		}
		return 0, err
	}
	return s.ID, nil
}
