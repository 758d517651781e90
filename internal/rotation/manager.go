package rotation

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/ca"
	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/keys/custody"
	"github.com/mica-pki/mica/internal/store"
)

// Store is the part of the store rotation uses.
type Store interface {
	store.CASlots
}

// Config wires a Manager.
type Config struct {
	Store Store
	// Keys makes new CA keys and opens the slots' keys.
	Keys       custody.Keys
	Thresholds Thresholds
	// IntermediateLifetime and RootLifetime are the lives of the CAs the
	// manager makes; defaults ca.DefaultIntermediateValidity and
	// ca.DefaultRootValidity. An intermediate never outlives its root: it
	// is cut to the root's end.
	IntermediateLifetime time.Duration
	RootLifetime         time.Duration
	// Algorithm of new CA keys; default the active intermediate's.
	Algorithm keys.Algorithm
	// URLs are the CRL and OCSP URLs an intermediate writes into the
	// certificates it signs.
	URLs func(intermediate *x509.Certificate) (crlURL, ocspURL string)
	// Poll is how often the slots are read again (to follow what other
	// servers did) and the thresholds checked; default 10s.
	Poll   time.Duration
	Clock  func() time.Time
	Logger *slog.Logger
	// OnChange, when set, is called after the slots changed (a step here
	// or on another server), so that consumers (CRLs, OCSP, the server's
	// certificate) follow. Calls do not overlap; it must not block long.
	OnChange func()
}

// Manager runs the rotation and is the authority's Issuers. Its methods
// are safe for concurrent use.
type Manager struct {
	cfg  Config
	cur  atomic.Pointer[snapshot]
	poke chan struct{}

	mu      sync.Mutex // serialises reloads and steps
	signers map[int64]crypto.Signer
	version string // of the slots last loaded
}

var _ authority.Issuers = (*Manager)(nil)

// snapshot is the CA as loaded at one moment: immutable.
type snapshot struct {
	slots    []store.CASlot
	certs    map[int64]*x509.Certificate
	online   map[int64]bool
	keyErrs  map[int64]error      // why a slot's key could not be opened
	active   *authority.SigningCA // the active intermediate
	next     *authority.SigningCA // the prepared intermediate, if its key is online
	nextSlot store.CASlot
	byID     map[string]*authority.SigningCA
	trust    *authority.Trust
	cas      []CA
}

// CA is one CA certificate in the bundle, as the revocation outputs need
// it: its CRL and, for an intermediate, its OCSP responder.
type CA struct {
	Slot  int64
	Kind  store.SlotKind
	State store.SlotState
	Cert  *x509.Certificate
	// ID is the certificate's fingerprint, how the inventory names it.
	ID string
	// CRL signs its CRLs; nil when its key is not online here (a root
	// kept on its own machine publishes a CRL signed there).
	CRL *issuance.CRLSigner
}

// New loads the slots (Import first records the CA's starting point) and
// returns a Manager that answers at once. Run keeps it current.
func New(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.Store == nil || cfg.Keys == nil || cfg.URLs == nil {
		return nil, errors.New("rotation: Config needs Store, Keys and URLs")
	}
	if cfg.IntermediateLifetime <= 0 {
		cfg.IntermediateLifetime = ca.DefaultIntermediateValidity
	}
	if cfg.RootLifetime <= 0 {
		cfg.RootLifetime = ca.DefaultRootValidity
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 10 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{cfg: cfg, poke: make(chan struct{}, 1), signers: map[int64]crypto.Signer{}}
	if err := m.reload(ctx); err != nil {
		return nil, err
	}
	if s := m.cur.Load(); s.active == nil {
		for _, c := range s.slots {
			if c.Kind == store.SlotIntermediate && c.State == store.SlotActive && s.keyErrs[c.ID] != nil {
				return nil, fmt.Errorf("rotation: the key of active intermediate %d cannot be opened: %w", c.ID, s.keyErrs[c.ID])
			}
		}
		return nil, errors.New("rotation: no active intermediate whose key is online here: check the key backend (key_backend, the PKCS#11 token) and `mica ca status`")
	}
	return m, nil
}

// Import records the CA a data directory started with, its root and first
// intermediate, as the first two slots, the first time a store serves it.
// A store that already has slots must have this root among them.
func Import(ctx context.Context, st Store, root, inter *x509.Certificate, rootKey, interKey custody.Ref, now time.Time) error {
	slots, err := st.CASlots(ctx)
	if err != nil {
		return err
	}
	if len(slots) > 0 {
		fp := authority.Fingerprint(root.Raw)
		for _, s := range slots {
			if s.Kind == store.SlotRoot && s.Fingerprint == fp {
				return nil
			}
		}
		return fmt.Errorf("rotation: the database's CA slots are of another CA: root %s of this data directory is not among them", fp)
	}
	r := &store.CASlot{Kind: store.SlotRoot, State: store.SlotActive, Cert: root.Raw, Fingerprint: authority.Fingerprint(root.Raw),
		KeyURI: rootKey.URI, KeySealed: rootKey.Sealed, NotBefore: root.NotBefore, NotAfter: root.NotAfter, PreparedAt: now}
	i := &store.CASlot{Kind: store.SlotIntermediate, State: store.SlotActive, Cert: inter.Raw, Fingerprint: authority.Fingerprint(inter.Raw),
		KeyURI: interKey.URI, KeySealed: interKey.Sealed, NotBefore: inter.NotBefore, NotAfter: inter.NotAfter, PreparedAt: now, Parent: 1}
	ev := &store.Event{Time: now, Actor: authority.SystemPrincipal, Action: store.ActionCASlotImported, Outcome: "ok",
		Serial: hex.EncodeToString(inter.SerialNumber.Bytes()), Fingerprint: i.Fingerprint,
		Detail: fmt.Sprintf("CA slots start from the data directory: root 1 %q (sha256 %s), intermediate 2 %q (sha256 %s), both active",
			root.Subject.CommonName, r.Fingerprint, inter.Subject.CommonName, i.Fingerprint)}
	err = st.AddCASlots(ctx, []*store.CASlot{r, i}, ev)
	if errors.Is(err, store.ErrConflict) {
		// Another server imported at the same moment.
		return Import(ctx, st, root, inter, rootKey, interKey, now)
	}
	return err
}

// Signing implements authority.Issuers: the active intermediate, or the
// prepared one when the active one ends before notAfter and the prepared
// one has propagated (then it is activated on the next pass).
func (m *Manager) Signing(notAfter time.Time) *authority.SigningCA {
	s := m.cur.Load()
	if !notAfter.After(s.active.Cert.NotAfter) || s.next == nil || notAfter.After(s.next.Cert.NotAfter) {
		return s.active
	}
	if m.cfg.Clock().Before(s.nextSlot.PreparedAt.Add(m.cfg.Thresholds.Propagation)) {
		return s.active
	}
	m.Poke()
	return s.next
}

// Trust implements authority.Issuers.
func (m *Manager) Trust() *authority.Trust { return m.cur.Load().trust }

// Issuer is the signing CA with fingerprint id, while it is in the bundle
// and its key is online: the issuer of its own OCSP responder's
// certificate.
func (m *Manager) Issuer(id string) *authority.SigningCA { return m.cur.Load().byID[id] }

// CAs lists the CA certificates in the bundle, roots first.
func (m *Manager) CAs() []CA { return m.cur.Load().cas }

// Slots are the slots as last loaded.
func (m *Manager) Slots() []store.CASlot { return m.cur.Load().slots }

// Poke makes Run check again now, as after its poll interval.
func (m *Manager) Poke() {
	select {
	case m.poke <- struct{}{}:
	default:
	}
}

// Run checks the slots every Poll (and when poked): it follows other
// servers' steps and takes the steps due, until ctx ends. Failures are
// logged and retried at the next pass; the CA in use stays as it is.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(m.cfg.Poll)
	defer t.Stop()
	for {
		if err := m.RunOnce(ctx); err != nil && ctx.Err() == nil {
			m.cfg.Logger.LogAttrs(ctx, slog.LevelError, "CA rotation pass failed; retrying", slog.String("error", err.Error()))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-m.poke:
		}
	}
}

// maxStepsPerPass bounds the steps of one pass; a state machine that
// kept finding steps would be a bug, not a reason to spin.
const maxStepsPerPass = 4

// RunOnce reads the slots and takes the steps due now.
func (m *Manager) RunOnce(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.reloadLocked(ctx); err != nil {
		return err
	}
	for range maxStepsPerPass {
		view, err := m.view(ctx)
		if err != nil {
			return err
		}
		step, ok := Next(view, m.cfg.Clock(), m.cfg.Thresholds)
		if !ok {
			return nil
		}
		if err := m.take(ctx, step, false); err != nil {
			return fmt.Errorf("rotation: %s: %w", step, err)
		}
	}
	return nil
}

// view is the slots as Next sees them.
func (m *Manager) view(ctx context.Context) ([]Slot, error) {
	s := m.cur.Load()
	out := make([]Slot, 0, len(s.slots))
	for _, c := range s.slots {
		v := Slot{ID: c.ID, Kind: c.Kind, State: c.State, Parent: c.Parent, NotBefore: c.NotBefore, NotAfter: c.NotAfter,
			PreparedAt: c.PreparedAt, ActivatedAt: c.ActivatedAt, RetiredAt: c.RetiredAt, KeyOnline: s.online[c.ID]}
		if c.State == store.SlotRetired {
			until, err := m.issuedUntil(ctx, s, c)
			if err != nil {
				return nil, err
			}
			v.IssuedUntil = until
		}
		out = append(out, v)
	}
	return out, nil
}

// issuedUntil is when the last certificate a retired slot signed expires:
// its leaves (the OCSP responder's own certificate left out, which lives
// only as long as there is something to answer for), or a root's
// intermediates (removed from the bundle or not: a verifier may still be
// presented one until it expires).
func (m *Manager) issuedUntil(ctx context.Context, s *snapshot, c store.CASlot) (time.Time, error) {
	if c.Kind == store.SlotIntermediate {
		return m.cfg.Store.IssuedUntil(ctx, c.Fingerprint, authority.ProfileOCSP)
	}
	var until time.Time
	for _, o := range s.slots {
		if o.Kind == store.SlotIntermediate && o.Parent == c.ID && o.NotAfter.After(until) {
			until = o.NotAfter
		}
	}
	return until, nil
}

// Force takes one step now, whatever the thresholds say: "prepare" or
// "activate" the next intermediate, "prepare-root" or "activate-root", or
// "abort" ("abort-root") the prepared one: it leaves the bundle before it
// ever signed. A forced activation skips the propagation wait: do it only
// when every verifier is known to hold the new bundle.
func (m *Manager) Force(ctx context.Context, step string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.reloadLocked(ctx); err != nil {
		return "", err
	}
	kind := store.SlotIntermediate
	var action Action
	switch step {
	case "prepare":
		action = Prepare
	case "activate":
		action = Activate
	case "prepare-root":
		action, kind = Prepare, store.SlotRoot
	case "activate-root":
		action, kind = Activate, store.SlotRoot
	case "abort":
		action = Remove
	case "abort-root":
		action, kind = Remove, store.SlotRoot
	default:
		return "", refuse("step %q: use prepare, activate, abort, prepare-root, activate-root or abort-root", step)
	}
	s := m.cur.Load()
	st := Step{Action: action, Kind: kind, Why: "forced by an administrator"}
	for _, c := range s.slots {
		if c.Kind != kind {
			continue
		}
		switch {
		case c.State == store.SlotPrepared && action == Prepare:
			return "", refuse("%s %d is already prepared: activate it (%s) or let it activate on its own", kind, c.ID, map[store.SlotKind]string{store.SlotRoot: "activate-root", store.SlotIntermediate: "activate"}[kind])
		case c.State == store.SlotPrepared && (action == Activate || action == Remove):
			st.Slot = c.ID
		}
	}
	if (action == Activate || action == Remove) && st.Slot == 0 {
		return "", refuse("no %s is prepared", kind)
	}
	if action == Prepare {
		signer, _ := m.activeSlot(s, store.SlotRoot)
		for _, c := range s.slots {
			if c.Kind == store.SlotRoot && c.State == store.SlotPrepared && kind == store.SlotIntermediate {
				signer = c
			}
		}
		if !s.online[signer.ID] {
			return "", refuse("root %d's key is not online here: the next %s comes from the offline-root ceremony "+
				"(`mica ca request-intermediate --next`, `mica ca sign-intermediate`, `mica ca import-intermediate --next`; a root: `mica ca new-root`, `mica ca import-root`)", signer.ID, kind)
		}
	}
	if action == Remove && kind == store.SlotRoot {
		for _, c := range s.slots {
			if c.Kind == store.SlotIntermediate && c.Parent == st.Slot && c.State != store.SlotRemoved {
				return "", refuse("intermediate %d was signed by root %d: abort it first (abort)", c.ID, st.Slot)
			}
		}
	}
	if action == Remove {
		st.Why = "aborted by an administrator before it signed anything"
	}
	if err := m.take(ctx, st, true); err != nil {
		return "", err
	}
	after := m.cur.Load()
	for _, c := range slices.Backward(after.slots) {
		if c.Kind == kind && (action == Prepare && c.State == store.SlotPrepared || action != Prepare && c.ID == st.Slot) {
			return fmt.Sprintf("%s %d is %s (sha256 %s, valid until %s)", kind, c.ID, c.State, c.Fingerprint, c.NotAfter.UTC().Format(time.RFC3339)), nil
		}
	}
	return fmt.Sprintf("%s done", step), nil
}

// refuse is a forced step the CA's state does not allow: the caller's to
// fix, not a failure of the server.
func refuse(format string, args ...any) error {
	return &authority.Error{Kind: authority.KindConflict, Detail: "rotation: " + fmt.Sprintf(format, args...)}
}

// take runs one step and reloads. A step another server took first
// (store.ErrConflict) is not an error: the reload shows what it did.
func (m *Manager) take(ctx context.Context, st Step, forced bool) error {
	now := m.cfg.Clock()
	var err error
	switch st.Action {
	case Prepare:
		err = m.prepare(ctx, st, now)
	case Activate, Remove:
		err = m.move(ctx, st, now, forced)
	default:
		err = fmt.Errorf("unknown action %q", st.Action)
	}
	if errors.Is(err, store.ErrConflict) {
		m.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "CA rotation step taken by another server", slog.String("step", st.String()))
		err = nil
	}
	if err != nil {
		return err
	}
	return m.reloadLocked(ctx)
}

func (m *Manager) event(action store.Action, cert *x509.Certificate, detail string) *store.Event {
	ev := &store.Event{Time: m.cfg.Clock(), Actor: authority.SystemPrincipal, Action: action, Outcome: "ok", Detail: detail}
	if cert != nil {
		ev.Serial, ev.Fingerprint = hex.EncodeToString(cert.SerialNumber.Bytes()), authority.Fingerprint(cert.Raw)
	}
	return ev
}

func (m *Manager) activeSlot(s *snapshot, kind store.SlotKind) (store.CASlot, bool) {
	for _, c := range s.slots {
		if c.Kind == kind && c.State == store.SlotActive {
			return c, true
		}
	}
	return store.CASlot{}, false
}

func nextID(s *snapshot) int64 {
	var last int64
	for _, c := range s.slots {
		last = max(last, c.ID)
	}
	return last + 1
}

func (m *Manager) prepare(ctx context.Context, st Step, now time.Time) error {
	s := m.cur.Load()
	root, ok := m.activeSlot(s, store.SlotRoot)
	if !ok {
		return errors.New("there is no active root")
	}
	if st.Kind == store.SlotIntermediate {
		// New intermediates are signed by the newest root: one prepared
		// while a root propagates activates together with it.
		for _, c := range s.slots {
			if c.Kind == store.SlotRoot && c.State == store.SlotPrepared {
				root = c
			}
		}
	}
	rootKey := m.signers[root.ID]
	if rootKey == nil {
		return fmt.Errorf("root %d's key is not online here: sign the next %s at the root ceremony (`mica ca sign-intermediate`) and import it, or keep the root key where this server can use it", root.ID, st.Kind)
	}
	rootCert := s.certs[root.ID]
	inter, ok := m.activeSlot(s, store.SlotIntermediate)
	if !ok {
		return errors.New("there is no active intermediate")
	}
	interCert := s.certs[inter.ID]
	alg := m.cfg.Algorithm
	if alg == "" {
		var err error
		if alg, err = keys.AlgorithmOf(interCert.PublicKey); err != nil {
			return err
		}
	}
	td, err := trustDomainOf(interCert)
	if err != nil {
		return err
	}
	id := nextID(s)
	var slot *store.CASlot
	var cert *x509.Certificate
	var ref custody.Ref
	var detail string
	switch st.Kind {
	case store.SlotIntermediate:
		var key crypto.Signer
		key, ref, err = m.cfg.Keys.Generate(alg, ca.IntermediateKeyLabel(id))
		if err != nil {
			return err
		}
		cfg := ca.IntermediateConfig{TrustDomain: td, CommonName: fmt.Sprintf("%s Intermediate CA %d", td.Name(), id),
			Validity: m.cfg.IntermediateLifetime, PermittedDNSDomains: interCert.PermittedDNSDomains,
			PermittedIPRanges: prefixes(interCert), Now: m.cfg.Clock}
		if left := rootCert.NotAfter.Sub(now.Truncate(time.Second)); cfg.Validity > left {
			// An intermediate never outlives its root.
			cfg.Validity = left
		}
		csrDER, err := ca.NewIntermediateCSR(key, cfg)
		if err != nil {
			return m.discard(ref, err)
		}
		csr, err := x509.ParseCertificateRequest(csrDER)
		if err != nil {
			return m.discard(ref, err)
		}
		if cert, err = ca.SignIntermediate(rootCert, rootKey, csr, cfg); err != nil {
			return m.discard(ref, err)
		}
		slot = &store.CASlot{Kind: store.SlotIntermediate, Parent: root.ID}
		detail = fmt.Sprintf("intermediate %d %q prepared and published (%s): signed by root %d, valid until %s, key %s",
			id, cert.Subject.CommonName, st.Why, root.ID, cert.NotAfter.UTC().Format(time.RFC3339), ref)
	case store.SlotRoot:
		var key crypto.Signer
		key, ref, err = m.cfg.Keys.Generate(alg, ca.RootKeyLabel(id))
		if err != nil {
			return err
		}
		cert, err = ca.NewRoot(key, ca.RootConfig{TrustDomain: td, CommonName: fmt.Sprintf("%s Root CA %d", td.Name(), id),
			Validity: m.cfg.RootLifetime, Now: m.cfg.Clock})
		if err != nil {
			return m.discard(ref, err)
		}
		newByOld, err := ca.CrossSign(cert, rootCert, rootKey, nil, m.cfg.Clock)
		if err != nil {
			return m.discard(ref, err)
		}
		oldByNew, err := ca.CrossSign(rootCert, cert, key, nil, m.cfg.Clock)
		if err != nil {
			return m.discard(ref, err)
		}
		slot = &store.CASlot{Kind: store.SlotRoot, Parent: root.ID, CrossFromPrevious: newByOld.Raw, CrossToPrevious: oldByNew.Raw}
		detail = fmt.Sprintf("root %d %q prepared and published (%s), cross-signed with root %d both ways, valid until %s, key %s",
			id, cert.Subject.CommonName, st.Why, root.ID, cert.NotAfter.UTC().Format(time.RFC3339), ref)
	default:
		return fmt.Errorf("unknown slot kind %q", st.Kind)
	}
	slot.State, slot.Cert, slot.Fingerprint = store.SlotPrepared, cert.Raw, authority.Fingerprint(cert.Raw)
	slot.KeyURI, slot.KeySealed, slot.NotBefore, slot.NotAfter, slot.PreparedAt = ref.URI, ref.Sealed, cert.NotBefore, cert.NotAfter, now
	if err := m.cfg.Store.AddCASlots(ctx, []*store.CASlot{slot}, m.event(store.ActionCASlotPrepared, cert, detail)); err != nil {
		return m.discard(ref, err)
	}
	m.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "CA prepared", slog.String("kind", string(st.Kind)), slog.Int64("slot", slot.ID),
		slog.String("why", st.Why), slog.Time("not_after", cert.NotAfter))
	return nil
}

// discard destroys a key made for a step that did not happen, where the
// backend keeps keys of its own (a token), and returns err.
func (m *Manager) discard(ref custody.Ref, err error) error {
	if d, ok := m.cfg.Keys.(custody.Destroyer); ok {
		if derr := d.Destroy(ref); derr != nil {
			m.cfg.Logger.Warn("could not destroy an unused CA key", slog.String("key", ref.String()), slog.String("error", derr.Error()))
		}
	}
	return err
}

func (m *Manager) move(ctx context.Context, st Step, now time.Time, forced bool) error {
	s := m.cur.Load()
	var target store.CASlot
	for _, c := range s.slots {
		if c.ID == st.Slot {
			target = c
		}
	}
	if target.ID == 0 {
		return fmt.Errorf("no slot %d", st.Slot)
	}
	cert := s.certs[target.ID]
	var moves []store.SlotMove
	var action store.Action
	var detail string
	switch st.Action {
	case Activate:
		action = store.ActionCASlotActivated
		detail = fmt.Sprintf("%s %d activated (%s)", target.Kind, target.ID, st.Why)
		if old, ok := m.activeSlot(s, target.Kind); ok {
			moves = append(moves, store.SlotMove{ID: old.ID, From: store.SlotActive, To: store.SlotRetired})
			detail += fmt.Sprintf("; %s %d retired (it stays in the bundle until what it signed expires)", old.Kind, old.ID)
		}
		moves = append(moves, store.SlotMove{ID: target.ID, From: store.SlotPrepared, To: store.SlotActive})
		if forced && now.Before(target.PreparedAt.Add(m.cfg.Thresholds.Propagation)) {
			detail += fmt.Sprintf("; before its propagation of %s was over", m.cfg.Thresholds.Propagation)
		}
	case Remove:
		action = store.ActionCASlotRemoved
		detail = fmt.Sprintf("%s %d removed from the bundle (%s)", target.Kind, target.ID, st.Why)
		moves = append(moves, store.SlotMove{ID: target.ID, From: target.State, To: store.SlotRemoved})
	}
	if err := m.cfg.Store.MoveCASlots(ctx, moves, now, m.event(action, cert, detail)); err != nil {
		return err
	}
	m.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "CA "+string(st.Action), slog.String("kind", string(target.Kind)), slog.Int64("slot", target.ID), slog.String("why", st.Why))
	return nil
}

func trustDomainOf(inter *x509.Certificate) (spiffeid.TrustDomain, error) {
	if len(inter.PermittedURIDomains) != 1 {
		return spiffeid.TrustDomain{}, fmt.Errorf("intermediate %q names %d trust domains in its name constraints, want one", inter.Subject.CommonName, len(inter.PermittedURIDomains))
	}
	return spiffeid.TrustDomainFromString(inter.PermittedURIDomains[0])
}

func prefixes(c *x509.Certificate) []netip.Prefix {
	var out []netip.Prefix
	for _, n := range c.PermittedIPRanges {
		addr, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		ones, _ := n.Mask.Size()
		out = append(out, netip.PrefixFrom(addr.Unmap(), ones))
	}
	return out
}

// reload reads the slots and, when they changed, builds a new snapshot.
func (m *Manager) reload(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reloadLocked(ctx)
}

func slotsVersion(slots []store.CASlot) string {
	b := make([]byte, 0, 32*len(slots))
	for _, c := range slots {
		b = fmt.Appendf(b, "%d:%s;", c.ID, c.State)
	}
	return string(b)
}

func (m *Manager) reloadLocked(ctx context.Context) error {
	slots, err := m.cfg.Store.CASlots(ctx)
	if err != nil {
		return err
	}
	if len(slots) == 0 {
		return errors.New("rotation: the database has no CA slots: Import the data directory's CA first")
	}
	v := slotsVersion(slots)
	if v == m.version {
		return nil
	}
	s, err := m.build(slots)
	if err != nil {
		return err
	}
	if s.active == nil && m.cur.Load() != nil {
		// Another server activated an intermediate whose key this one
		// cannot open: keep signing with the one it has (still valid and
		// trusted) rather than fail, and say so until it is fixed.
		return fmt.Errorf("rotation: this server cannot open the key of the active intermediate (%v); it goes on signing with the one it had: give it the key backend the other servers use", s.keyErrs)
	}
	m.cur.Store(s)
	changed := m.version != ""
	m.version = v
	if changed && m.cfg.OnChange != nil {
		m.cfg.OnChange()
	}
	return nil
}

// build makes a snapshot from the slots, opening the keys of the slots in
// the bundle (once: opened keys are kept across snapshots).
func (m *Manager) build(slots []store.CASlot) (*snapshot, error) {
	s := &snapshot{slots: slots, certs: map[int64]*x509.Certificate{}, online: map[int64]bool{}, keyErrs: map[int64]error{},
		byID: map[string]*authority.SigningCA{}}
	byID := map[int64]store.CASlot{}
	for _, c := range slots {
		cert, err := x509.ParseCertificate(c.Cert)
		if err != nil {
			return nil, fmt.Errorf("rotation: slot %d holds an unreadable certificate: %w", c.ID, err)
		}
		s.certs[c.ID], byID[c.ID] = cert, c
		if c.State == store.SlotRemoved {
			delete(m.signers, c.ID)
			continue
		}
		if m.signers[c.ID] == nil && (c.KeyURI != "" || len(c.KeySealed) > 0) {
			key, err := m.cfg.Keys.Open(custody.Ref{URI: c.KeyURI, Sealed: c.KeySealed})
			if err != nil {
				// A key this server cannot open (an offline root, a token
				// it is not configured for) only means this server cannot
				// sign with that slot; the active intermediate's is checked
				// by New.
				m.cfg.Logger.Warn("a CA key is not available on this server", slog.String("kind", string(c.Kind)), slog.Int64("slot", c.ID), slog.String("error", err.Error()))
				s.keyErrs[c.ID] = err
				continue
			}
			m.signers[c.ID] = key
		}
		s.online[c.ID] = m.signers[c.ID] != nil
	}

	// Cross-certificates: (certified root, certifying root) → certificate.
	type pair struct{ subject, issuer int64 }
	cross := map[pair]*x509.Certificate{}
	live := func(id int64) bool { c, ok := byID[id]; return ok && c.State != store.SlotRemoved }
	for _, c := range slots {
		if c.Kind != store.SlotRoot || c.Parent == 0 || !live(c.ID) || !live(c.Parent) {
			continue
		}
		for _, x := range []struct {
			der []byte
			p   pair
		}{{c.CrossFromPrevious, pair{c.ID, c.Parent}}, {c.CrossToPrevious, pair{c.Parent, c.ID}}} {
			if len(x.der) == 0 {
				continue
			}
			cert, err := x509.ParseCertificate(x.der)
			if err != nil {
				return nil, fmt.Errorf("rotation: root slot %d holds an unreadable cross-certificate: %w", c.ID, err)
			}
			cross[x.p] = cert
		}
	}

	var roots, inters []*x509.Certificate
	order := map[store.SlotState]int{store.SlotActive: 0, store.SlotPrepared: 1, store.SlotRetired: 2}
	var rootSlots []store.CASlot
	for _, c := range slots {
		if c.Kind == store.SlotRoot && live(c.ID) {
			rootSlots = append(rootSlots, c)
		}
	}
	slices.SortStableFunc(rootSlots, func(a, b store.CASlot) int { return order[a.State] - order[b.State] })
	for _, r := range rootSlots {
		roots = append(roots, s.certs[r.ID])
		s.cas = append(s.cas, m.caOf(r, s))
	}
	chains := map[string][]*x509.Certificate{}
	for _, c := range slots {
		if c.Kind != store.SlotIntermediate || !live(c.ID) {
			continue
		}
		cert := s.certs[c.ID]
		chain := []*x509.Certificate{cert}
		for _, r := range rootSlots {
			if x := cross[pair{c.Parent, r.ID}]; x != nil && r.ID != c.Parent {
				chain = append(chain, x)
			}
		}
		chains[c.Fingerprint] = chain
		inters = append(inters, cert)
		s.cas = append(s.cas, m.caOf(c, s))
		key := m.signers[c.ID]
		if key == nil {
			continue
		}
		crlURL, ocspURL := m.cfg.URLs(cert)
		iss, err := issuance.New(issuance.Config{Cert: cert, Signer: key, CRLURL: crlURL, OCSPURL: ocspURL, Now: m.cfg.Clock})
		if err != nil {
			return nil, fmt.Errorf("rotation: intermediate %d: %w", c.ID, err)
		}
		sc := &authority.SigningCA{Issuer: iss, Cert: cert, ID: c.Fingerprint, Chain: chain}
		s.byID[c.Fingerprint] = sc
		switch c.State {
		case store.SlotActive:
			s.active = sc
		case store.SlotPrepared:
			s.next, s.nextSlot = sc, c
		}
	}
	for _, x := range cross {
		inters = append(inters, x)
	}
	s.trust = authority.NewTrust(roots, inters, chains)
	return s, nil
}

func (m *Manager) caOf(c store.CASlot, s *snapshot) CA {
	out := CA{Slot: c.ID, Kind: c.Kind, State: c.State, Cert: s.certs[c.ID], ID: c.Fingerprint}
	if key := m.signers[c.ID]; key != nil {
		out.CRL = issuance.NewCRLSigner(s.certs[c.ID], key)
	}
	return out
}

// Schedule is the manager's Schedule of its slots now.
func (m *Manager) Schedule(ctx context.Context) ([]Due, error) {
	view, err := m.view(ctx)
	if err != nil {
		return nil, err
	}
	return Schedule(view, m.cfg.Thresholds), nil
}

// SlotsView reads slots as Next and Schedule see them, the IssuedUntil of
// retired ones asked of st; the keys are taken as online when the slot
// names one (a status reader opens none).
func SlotsView(ctx context.Context, st Store, slots []store.CASlot) ([]Slot, error) {
	out := make([]Slot, 0, len(slots))
	for _, c := range slots {
		v := Slot{ID: c.ID, Kind: c.Kind, State: c.State, Parent: c.Parent, NotBefore: c.NotBefore, NotAfter: c.NotAfter,
			PreparedAt: c.PreparedAt, ActivatedAt: c.ActivatedAt, RetiredAt: c.RetiredAt, KeyOnline: c.KeyURI != "" || len(c.KeySealed) > 0}
		if c.State == store.SlotRetired && c.Kind == store.SlotIntermediate {
			until, err := st.IssuedUntil(ctx, c.Fingerprint, authority.ProfileOCSP)
			if err != nil {
				return nil, err
			}
			v.IssuedUntil = until
		}
		out = append(out, v)
	}
	return out, nil
}
