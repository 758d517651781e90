package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// testWebhooks checks webhook delivery state: an endpoint starts at the
// cursor it is first given, the cursor moves only from where it is
// (compare-and-swap), failures and dead letters are kept, and both
// survive a reopen.
func testWebhooks(t *testing.T, open Opener) {
	h := openStore(t, open)
	s, ok := h.Store.(store.WebhookStore)
	if !ok {
		t.Fatalf("%T does not implement store.WebhookStore", h.Store)
	}
	ctx := context.Background()
	st, err := s.InitWebhook(ctx, "cmdb", 41)
	if err != nil || st.Cursor != 41 || st.Failures != 0 || !st.LastSuccess.IsZero() {
		t.Fatalf("InitWebhook: %+v, %v", st, err)
	}
	if st, err := s.InitWebhook(ctx, "cmdb", 99); err != nil || st.Cursor != 41 {
		t.Errorf("a second InitWebhook moved the cursor: %+v, %v", st, err)
	}
	if err := s.AdvanceWebhook(ctx, "cmdb", 40, 50, time.Time{}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("advance from the wrong cursor: %v, want ErrConflict", err)
	}
	if err := s.NoteWebhookFailure(ctx, "cmdb", base, "hooks.example.test answered 503", 3); err != nil {
		t.Fatal(err)
	}
	if err := s.AdvanceWebhook(ctx, "cmdb", 41, 50, time.Time{}); err != nil {
		t.Fatal(err)
	}
	for range 2 { // recording one twice keeps one
		if err := s.AddDeadLetter(ctx, store.DeadLetter{Endpoint: "cmdb", Seq: 45, Attempts: 1, Status: 400, Error: "answered 400", At: base}); err != nil {
			t.Fatal(err)
		}
	}
	h = reopen(t, open, h)
	s = h.Store.(store.WebhookStore)
	states, err := s.WebhookStates(ctx)
	if err != nil || len(states) != 1 {
		t.Fatalf("states %+v, %v", states, err)
	}
	if st := states[0]; st.Cursor != 50 || st.Failures != 3 || st.DeadLetters != 1 || st.LastError != "hooks.example.test answered 503" || !st.LastAttempt.Equal(base) {
		t.Errorf("after reopen: %+v", st)
	}
	if err := s.AdvanceWebhook(ctx, "cmdb", 50, 60, base.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	states, _ = s.WebhookStates(ctx)
	if st := states[0]; st.Failures != 0 || !st.LastSuccess.Equal(base.Add(time.Second)) {
		t.Errorf("a success did not clear the failures: %+v", st)
	}
	dl, err := s.DeadLetters(ctx, "cmdb", 0)
	if err != nil || len(dl) != 1 || dl[0].Seq != 45 || dl[0].Status != 400 || !dl[0].At.Equal(base) {
		t.Errorf("dead letters %+v, %v", dl, err)
	}
}

// testLeases checks that a lease has one holder until it runs out.
func testLeases(t *testing.T, open Opener) {
	h := openStore(t, open)
	s, ok := h.Store.(store.LeaseStore)
	if !ok {
		t.Fatalf("%T does not implement store.LeaseStore", h.Store)
	}
	ctx := context.Background()
	take := func(owner string, at time.Time) bool {
		t.Helper()
		ok, err := s.TakeLease(ctx, "webhook:cmdb", owner, at, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !take("a", base) || take("b", base.Add(10*time.Second)) || !take("a", base.Add(20*time.Second)) {
		t.Error("a lease was not held by its first taker alone while fresh")
	}
	if take("b", base.Add(49*time.Second)) || !take("b", base.Add(51*time.Second)) || take("a", base.Add(52*time.Second)) {
		t.Error("a renewed lease did not pass to another only after it ran out")
	}
	if ok, _ := s.TakeLease(ctx, "other", "a", base, 30*time.Second); !ok {
		t.Error("leases of different names interfere")
	}
}

// testExpiryNotices checks which certificates are announced as about to
// expire: at risk (within the window, under a fraction of their life
// left, not superseded, still seen), and each only once.
func testExpiryNotices(t *testing.T, open Opener) {
	h := openStore(t, open)
	s, ok := h.Store.(store.ExpiryNoticeStore)
	if !ok {
		t.Fatalf("%T does not implement store.ExpiryNoticeStore", h.Store)
	}
	ds := h.Store.(store.DiscoveryStore)
	ctx := context.Background()
	now := base.Add(time.Hour)
	issue := func(i int, notBefore, notAfter time.Time) *store.Issuance {
		iss := NewIssuance(i)
		iss.Certificate.Identity = iss.Certificate.Serial // its own identity: nothing supersedes it
		iss.Certificate.NotBefore, iss.Certificate.NotAfter = notBefore, notAfter
		record(t, h.Store, iss)
		return iss
	}
	// 90 days, 5 days left: at risk.
	long := issue(1, now.Add(-85*24*time.Hour), now.Add(5*24*time.Hour))
	// 1 hour, 20 minutes left: more than a quarter of its life, renewal's business.
	issue(2, now.Add(-40*time.Minute), now.Add(20*time.Minute))
	// 1 hour, 10 minutes left: nothing renewed it in time.
	short := issue(3, now.Add(-50*time.Minute), now.Add(10*time.Minute))
	// Superseded by a newer certificate of its identity.
	old := NewIssuance(4)
	old.Certificate.NotBefore, old.Certificate.NotAfter = now.Add(-85*24*time.Hour), now.Add(2*24*time.Hour)
	record(t, h.Store, old)
	newer := NewIssuance(4)
	newer.Certificate.Identity = old.Certificate.Identity
	newer.Certificate.NotBefore, newer.Certificate.NotAfter = now, now.Add(90*24*time.Hour)
	record(t, h.Store, newer)
	// Discovered: one still seen, one gone.
	d1 := discovered("d1.example.test", "external", now.Add(3*24*time.Hour))
	d2 := discovered("d2.example.test", "external", now.Add(3*24*time.Hour))
	if _, err := ds.RecordDiscovery(ctx, store.DiscoveryBatch{Reporter: "admin", ScanID: "1", At: now, Certificates: []store.DiscoveredCertificate{d1, d2},
		Sightings: []store.Sighting{seen(d1, "tls://a:443"), seen(d2, "tls://b:443")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.RecordDiscovery(ctx, store.DiscoveryBatch{Reporter: "admin", ScanID: "2", At: now.Add(time.Second), Scanned: []string{"tls://b:443"}}); err != nil {
		t.Fatal(err)
	}
	f := store.NoticeFilter{Now: now, Within: 14 * 24 * time.Hour, LifeDivisor: 4}
	got, err := s.ExpiringWithoutNotice(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	var fps []string
	for _, c := range got {
		fps = append(fps, c.Fingerprint)
	}
	want := []string{short.Certificate.Fingerprint, d1.Fingerprint, long.Certificate.Fingerprint}
	if len(fps) != len(want) || fps[0] != want[0] || fps[2] != want[2] || fps[1] != want[1] {
		t.Fatalf("at risk %q, want %q (soonest first)", fps, want)
	}
	if !got[1].Discovered || got[0].Discovered || got[0].Profile == "" {
		t.Errorf("candidates %+v", got)
	}
	for i, c := range got[:2] {
		for range 2 {
			if err := s.AddExpiryNotice(ctx, c.Fingerprint, int64(100+i), now); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got, err := s.ExpiringWithoutNotice(ctx, f); err != nil || len(got) != 1 || got[0].Fingerprint != long.Certificate.Fingerprint {
		t.Errorf("after two notices: %+v, %v; want only the one not announced", got, err)
	}
	if _, err := s.ExpiringWithoutNotice(ctx, store.NoticeFilter{Now: now}); err == nil {
		t.Error("a filter without a window was accepted")
	}
}
