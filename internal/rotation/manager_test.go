package rotation_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/ca"
	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/keys/custody"
	"github.com/mica-pki/mica/internal/keys/pkcs11/softhsmtest"
	"github.com/mica-pki/mica/internal/rotation"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/postgres"
	"github.com/mica-pki/mica/internal/store/postgres/pgtest"
	"github.com/mica-pki/mica/internal/store/sqlite"
)

var cluster pgtest.Cluster

func TestMain(m *testing.M) { os.Exit(cluster.Run(m)) }

var (
	td   = spiffeid.RequireTrustDomainFromString("example.org")
	pass = []byte("rotation test passphrase")
)

// clock is the tests' time: it moves only when a test moves it.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *clock { return &clock{t: time.Now().Truncate(time.Second)} }

// newCA makes a data directory's CA at the clock's time and records it in
// st, as a first `mica serve` does.
func newCA(t *testing.T, st store.Store, c *clock, keyStore custody.Keys, rootLife, interLife time.Duration) *ca.Hierarchy {
	t.Helper()
	dir := t.TempDir()
	h, err := ca.Init(dir, ca.InitConfig{TrustDomain: td, Keys: keyStore, Passphrase: pass, RootValidity: rootLife, IntermediateValidity: interLife, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	rootRef, err := ca.KeyRef(dir, ca.RootKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	interRef, err := ca.KeyRef(dir, ca.IntermediateKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := rotation.Import(context.Background(), st, h.Root, h.Intermediate, rootRef, interRef, c.Now()); err != nil {
		t.Fatal(err)
	}
	return h
}

func urls(c *x509.Certificate) (string, string) {
	return "http://127.0.0.1:8080/crl/x.crl", "http://127.0.0.1:8080/ocsp"
}

func newManager(t *testing.T, st store.Store, c *clock, keyStore custody.Keys, th rotation.Thresholds, interLife, rootLife time.Duration, changed func()) *rotation.Manager {
	t.Helper()
	m, err := rotation.New(context.Background(), rotation.Config{Store: st, Keys: keyStore, Thresholds: th, IntermediateLifetime: interLife,
		RootLifetime: rootLife, URLs: urls, Clock: c.Now, OnChange: changed})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func openSQLite(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "mica.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func states(t *testing.T, st store.Store) map[int64]store.SlotState {
	t.Helper()
	slots, err := st.CASlots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]store.SlotState{}
	for _, s := range slots {
		out[s.ID] = s.State
	}
	return out
}

func events(t *testing.T, st store.Store, action store.Action) []store.Event {
	t.Helper()
	evs, err := st.Events(context.Background(), store.EventFilter{Action: action})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// issue signs a leaf ending at notAfter with the CA Signing picks, as the
// authority would.
func issue(t *testing.T, m *rotation.Manager, now, notAfter time.Time) (*x509.Certificate, *authority.SigningCA) {
	t.Helper()
	sc := m.Signing(notAfter)
	key, _ := keys.Generate(keys.ECDSAP256, rand.Reader)
	id, _ := identity.Parse("spiffe://example.org/workload")
	p, err := sc.Issuer.Prepare(issuance.Request{PublicKey: key.Public(), Identity: id, NotBefore: now.Add(-time.Minute), NotAfter: notAfter,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}})
	if err != nil {
		t.Fatalf("issuing with %s: %v", sc.Cert.Subject.CommonName, err)
	}
	leaf, err := sc.Issuer.Sign(p)
	if err != nil {
		t.Fatal(err)
	}
	return leaf, sc
}

func record(t *testing.T, st store.Store, leaf *x509.Certificate, issuer string) {
	t.Helper()
	c := store.Certificate{Serial: authority.SerialHex(leaf), Fingerprint: authority.Fingerprint(leaf.Raw), Identity: "spiffe://example.org/workload",
		Profile: "service", NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, Issuer: issuer, Status: store.StatusActive, DER: leaf.Raw}
	if err := st.RecordIssuance(context.Background(), &store.Issuance{Certificate: c,
		Event: store.Event{Time: leaf.NotBefore, Actor: "test", Action: store.ActionCertIssued, Serial: c.Serial, Outcome: "ok"}}); err != nil {
		t.Fatal(err)
	}
}

// verifyAgainstEachRoot checks leaf with its chain against every root of
// the bundle on its own: a verifier that trusts either root accepts it.
func verifyAgainstEachRoot(t *testing.T, leaf *x509.Certificate, chain []*x509.Certificate, trust *authority.Trust, at time.Time) {
	t.Helper()
	inter := x509.NewCertPool()
	for _, c := range chain {
		inter.AddCert(c)
	}
	for _, r := range trust.Roots {
		roots := x509.NewCertPool()
		roots.AddCert(r)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("a leaf of %q does not verify against root %q alone: %v", chain[0].Subject.CommonName, r.Subject.CommonName, err)
		}
	}
}

// TestIntermediateRotation walks one intermediate rotation through every
// threshold: prepared at half its life and published, the next one used
// only once propagated, activated, and the old one removed when its last
// leaf expires; each move an audit event.
func TestIntermediateRotation(t *testing.T) {
	st := openSQLite(t)
	c := newClock()
	k := custody.Sealed(pass)
	h := newCA(t, st, c, k, 1000*time.Hour, 100*time.Hour)
	changes := 0
	th := rotation.Thresholds{PrepareAt: 0.5, Propagation: 10 * time.Hour}
	m := newManager(t, st, c, k, th, 100*time.Hour, 0, func() { changes++ })
	ctx := context.Background()

	if err := m.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := states(t, st); len(got) != 2 || got[1] != store.SlotActive || got[2] != store.SlotActive {
		t.Fatalf("after import: %v, want root 1 and intermediate 2 active", got)
	}
	half := h.Intermediate.NotBefore.Add(h.Intermediate.NotAfter.Sub(h.Intermediate.NotBefore) / 2)
	c.Add(half.Sub(c.Now()) - time.Minute)
	if err := m.RunOnce(ctx); err != nil || len(states(t, st)) != 2 {
		t.Fatalf("before half its life: %v, %v", states(t, st), err)
	}
	c.Add(time.Minute)
	if err := m.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := states(t, st); got[3] != store.SlotPrepared {
		t.Fatalf("at half its life: %v, want intermediate 3 prepared", got)
	}
	if evs := events(t, st, store.ActionCASlotPrepared); len(evs) != 1 || evs[0].Fingerprint == "" {
		t.Fatalf("ca.prepared events: %+v", evs)
	}
	trust := m.Trust()
	if len(trust.Roots) != 1 || len(trust.Intermediates) != 2 {
		t.Fatalf("bundle while prepared: %d roots, %d intermediates; want the prepared one published", len(trust.Roots), len(trust.Intermediates))
	}
	next := m.Slots()[2]

	// Not yet propagated: a leaf that would outlive the active
	// intermediate still comes from it (the authority shortens it).
	late := h.Intermediate.NotAfter.Add(time.Hour)
	if sc := m.Signing(late); sc.ID != authority.Fingerprint(h.Intermediate.Raw) {
		t.Fatal("the prepared intermediate signed before its propagation was over")
	}
	leaf, sc := issue(t, m, c.Now(), c.Now().Add(20*time.Hour))
	record(t, st, leaf, sc.ID)

	c.Add(th.Propagation)
	// Propagated but not yet activated: a leaf the active one cannot cover
	// comes from the next one instead of being shortened.
	if sc := m.Signing(late); sc.ID != next.Fingerprint {
		t.Fatalf("a leaf ending after the active intermediate came from %s, want the next one", sc.Cert.Subject.CommonName)
	}
	if err := m.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := states(t, st); got[2] != store.SlotRetired || got[3] != store.SlotActive {
		t.Fatalf("after propagation: %v, want 2 retired and 3 active", got)
	}
	if sc := m.Signing(c.Now().Add(time.Hour)); sc.ID != next.Fingerprint {
		t.Fatal("the activated intermediate does not sign")
	}
	if len(m.Trust().Intermediates) != 2 {
		t.Fatal("the retired intermediate left the bundle while its leaf lives")
	}
	// The retired intermediate stays while its leaf lives.
	c.Add(leaf.NotAfter.Sub(c.Now()) - time.Minute)
	if err := m.RunOnce(ctx); err != nil || states(t, st)[2] != store.SlotRetired {
		t.Fatalf("before its last leaf expires: %v, %v", states(t, st), err)
	}
	c.Add(time.Minute)
	if err := m.RunOnce(ctx); err != nil || states(t, st)[2] != store.SlotRemoved {
		t.Fatalf("after its last leaf expired: %v, %v", states(t, st), err)
	}
	if len(m.Trust().Intermediates) != 1 {
		t.Fatal("the removed intermediate is still in the bundle")
	}
	for _, a := range []store.Action{store.ActionCASlotActivated, store.ActionCASlotRemoved} {
		if evs := events(t, st, a); len(evs) != 1 {
			t.Errorf("%s events: %d, want 1", a, len(evs))
		}
	}
	if changes != 3 {
		t.Errorf("OnChange called %d times, want 3 (prepared, activated, removed)", changes)
	}
}

// TestRootRollover runs a CA through a root rollover hour by hour: the new
// root is cross-signed both ways, an intermediate is prepared under it once
// it activates, and at every hour every leaf verifies against each root of
// the bundle on its own and never outlives its issuer.
func TestRootRollover(t *testing.T) {
	st := openSQLite(t)
	c := newClock()
	k := custody.Sealed(pass)
	newCA(t, st, c, k, 100*time.Hour, 30*time.Hour)
	th := rotation.Thresholds{PrepareAt: 0.5, Propagation: 4 * time.Hour, AutoRoot: true}
	m := newManager(t, st, c, k, th, 30*time.Hour, 100*time.Hour, nil)
	ctx := context.Background()
	const ttl = 4 * time.Hour
	issuers := map[string]bool{}
	var rootRemoved bool
	for hour := 0; hour < 140 && !rootRemoved; hour++ {
		if err := m.RunOnce(ctx); err != nil {
			t.Fatalf("hour %d: %v", hour, err)
		}
		now := c.Now()
		leaf, sc := issue(t, m, now, now.Add(ttl))
		if leaf.NotAfter.After(sc.Cert.NotAfter) || leaf.NotAfter.Sub(leaf.NotBefore) < ttl {
			t.Fatalf("hour %d: leaf of %s shortened or outliving it", hour, sc.Cert.Subject.CommonName)
		}
		record(t, st, leaf, sc.ID)
		issuers[sc.ID] = true
		verifyAgainstEachRoot(t, leaf, sc.Chain, m.Trust(), now)
		rootRemoved = states(t, st)[1] == store.SlotRemoved
		c.Add(time.Hour)
	}
	if !rootRemoved {
		t.Fatalf("root 1 was not removed: %v", states(t, st))
	}
	if n := len(events(t, st, store.ActionCASlotPrepared)); n < 3 {
		t.Errorf("%d ca.prepared events, want the root and at least two intermediates", n)
	}
	var roots int
	for _, s := range m.Slots() {
		if s.Kind == store.SlotRoot && s.Parent == 1 {
			roots++
			if len(s.CrossFromPrevious) == 0 || len(s.CrossToPrevious) == 0 {
				t.Error("the new root is not cross-signed both ways")
			}
		}
	}
	if roots != 1 || len(issuers) < 3 {
		t.Errorf("%d new roots and %d issuing intermediates over the run", roots, len(issuers))
	}
}

// TestForce: an administrator's forced steps, and their refusals.
func TestForce(t *testing.T) {
	st := openSQLite(t)
	c := newClock()
	k := custody.Sealed(pass)
	newCA(t, st, c, k, 1000*time.Hour, 100*time.Hour)
	m := newManager(t, st, c, k, rotation.Thresholds{Propagation: 10 * time.Hour}, 100*time.Hour, 0, nil)
	ctx := context.Background()
	if _, err := m.Force(ctx, "activate"); err == nil {
		t.Fatal("activate with nothing prepared")
	}
	out, err := m.Force(ctx, "prepare")
	if err != nil || states(t, st)[3] != store.SlotPrepared {
		t.Fatalf("prepare: %q %v", out, err)
	}
	if _, err := m.Force(ctx, "prepare"); err == nil {
		t.Fatal("prepared twice")
	}
	if _, err := m.Force(ctx, "activate"); err != nil || states(t, st)[3] != store.SlotActive {
		t.Fatalf("activate: %v", err)
	}
	evs := events(t, st, store.ActionCASlotActivated)
	if len(evs) != 1 || !strings.Contains(evs[0].Detail, "before its propagation") {
		t.Fatalf("a forced early activation must say so in its event: %+v", evs)
	}
	if _, err := m.Force(ctx, "prepare-root"); err != nil || states(t, st)[4] != store.SlotPrepared {
		t.Fatalf("prepare-root: %v %v", err, states(t, st))
	}
	if _, err := m.Force(ctx, "prepare"); err != nil || states(t, st)[5] != store.SlotPrepared {
		t.Fatalf("prepare under the prepared root: %v %v", err, states(t, st))
	}
	if m.Slots()[4].Parent != 4 {
		t.Fatalf("the next intermediate was signed by root %d, want the newest, 4", m.Slots()[4].Parent)
	}
	if _, err := m.Force(ctx, "abort-root"); err == nil {
		t.Fatal("a root aborted under its prepared intermediate")
	}
	for _, step := range []string{"abort", "abort-root"} {
		if _, err := m.Force(ctx, step); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
	}
	if got := states(t, st); got[4] != store.SlotRemoved || got[5] != store.SlotRemoved {
		t.Fatalf("after the aborts: %v", got)
	}
	if n := len(m.Trust().Roots); n != 1 {
		t.Fatalf("%d roots in the bundle after aborting the new one", n)
	}
	if _, err := m.Force(ctx, "rollback"); err == nil {
		t.Fatal("an unknown step")
	}
}

// TestTwoReplicasPostgres: two servers on one PostgreSQL database run
// their passes at the same moments; exactly one prepares, and both sign
// with the same slot once it activates.
func TestTwoReplicasPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("PostgreSQL runs in the full suite")
	}
	url := cluster.Database(t)
	ctx := context.Background()
	var stores []store.Store
	for range 2 {
		st, err := postgres.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		stores = append(stores, st)
	}
	c := newClock()
	k := custody.Sealed(pass)
	h := newCA(t, stores[0], c, k, 1000*time.Hour, 100*time.Hour)
	// The second server starting on the same CA imports nothing more.
	if err := rotation.Import(ctx, stores[1], h.Root, h.Intermediate, custody.Ref{}, custody.Ref{}, c.Now()); err != nil {
		t.Fatal(err)
	}
	th := rotation.Thresholds{Propagation: 10 * time.Hour}
	ms := []*rotation.Manager{
		newManager(t, stores[0], c, k, th, 100*time.Hour, 0, nil),
		newManager(t, stores[1], c, k, th, 100*time.Hour, 0, nil),
	}
	both := func() {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, m := range ms {
			wg.Go(func() { errs[i] = m.RunOnce(ctx) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
	}
	c.Add(h.Intermediate.NotAfter.Sub(h.Intermediate.NotBefore) / 2)
	both()
	both() // each sees what the other did
	if evs := events(t, stores[0], store.ActionCASlotPrepared); len(evs) != 1 {
		t.Fatalf("%d ca.prepared events from two replicas, want exactly one", len(evs))
	}
	prepared := 0
	for _, s := range states(t, stores[1]) {
		if s == store.SlotPrepared {
			prepared++
		}
	}
	if prepared != 1 {
		t.Fatalf("%d prepared slots, want 1", prepared)
	}
	c.Add(th.Propagation)
	both()
	both()
	if evs := events(t, stores[0], store.ActionCASlotActivated); len(evs) != 1 {
		t.Fatalf("%d ca.activated events, want exactly one", len(evs))
	}
	a, b := ms[0].Signing(c.Now().Add(time.Hour)), ms[1].Signing(c.Now().Add(time.Hour))
	if a.ID != b.ID || a.ID == authority.Fingerprint(h.Intermediate.Raw) {
		t.Fatalf("replicas sign with %s and %s; want both the new intermediate", a.Cert.Subject.CommonName, b.Cert.Subject.CommonName)
	}
}

// TestRotationInToken rotates with the CA keys in a SoftHSM2 token: the
// next intermediate's key is made in the token, the slot keeps only its
// URI, and leaves are signed in the token.
func TestRotationInToken(t *testing.T) {
	st := openSQLite(t)
	c := newClock()
	k, err := custody.New(custody.Config{Backend: custody.PKCS11, PKCS11: softhsmtest.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	newCA(t, st, c, k, 1000*time.Hour, 100*time.Hour)
	m := newManager(t, st, c, k, rotation.Thresholds{Propagation: time.Hour}, 100*time.Hour, 0, nil)
	ctx := context.Background()
	if _, err := m.Force(ctx, "prepare"); err != nil {
		t.Fatal(err)
	}
	c.Add(time.Hour)
	if err := m.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	slots := m.Slots()
	next := slots[len(slots)-1]
	if next.State != store.SlotActive || !strings.HasPrefix(next.KeyURI, "pkcs11:") || next.KeySealed != nil {
		t.Fatalf("the next intermediate: %s, key %q, sealed %d bytes; want active with its key in the token", next.State, next.KeyURI, len(next.KeySealed))
	}
	leaf, sc := issue(t, m, c.Now(), c.Now().Add(time.Hour))
	if sc.ID != next.Fingerprint {
		t.Fatal("not signed by the new intermediate")
	}
	verifyAgainstEachRoot(t, leaf, sc.Chain, m.Trust(), c.Now())
}

// TestReplicaWithoutTheKey: a server that cannot open the key of an
// intermediate another server activated (its token is not configured
// there) keeps signing with the one it had, which stays valid and trusted,
// and reports the problem at every pass instead of failing issuance.
func TestReplicaWithoutTheKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mica.db")
	ctx := context.Background()
	var stores []store.Store
	for range 2 {
		st, err := sqlite.Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		stores = append(stores, st)
	}
	c := newClock()
	token, err := custody.New(custody.Config{Backend: custody.PKCS11, PKCS11: softhsmtest.New(t), Passphrase: pass})
	if err != nil {
		t.Fatal(err)
	}
	defer token.Close()
	h := newCA(t, stores[0], c, custody.Sealed(pass), 1000*time.Hour, 100*time.Hour)
	th := rotation.Thresholds{Propagation: time.Hour}
	withToken := newManager(t, stores[0], c, token, th, 100*time.Hour, 0, nil)
	fileOnly := newManager(t, stores[1], c, custody.Sealed(pass), th, 100*time.Hour, 0, nil)
	if _, err := withToken.Force(ctx, "prepare"); err != nil {
		t.Fatal(err)
	}
	if _, err := withToken.Force(ctx, "activate"); err != nil {
		t.Fatal(err)
	}
	err = fileOnly.RunOnce(ctx)
	if err == nil || !strings.Contains(err.Error(), "cannot open the key of the active intermediate") {
		t.Fatalf("RunOnce on the server without the token: %v", err)
	}
	if sc := fileOnly.Signing(c.Now().Add(time.Hour)); sc.ID != authority.Fingerprint(h.Intermediate.Raw) {
		t.Fatalf("the server without the token signs with %q, want the intermediate it had", sc.Cert.Subject.CommonName)
	}
	leaf, sc := issue(t, fileOnly, c.Now(), c.Now().Add(time.Hour))
	verifyAgainstEachRoot(t, leaf, sc.Chain, withToken.Trust(), c.Now())
}
