package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

func consoleEvent(action store.Action) *store.Event {
	return &store.Event{Time: base, Actor: "spiffe://example.test/mica/admin/a", Action: action, Outcome: "ok", Detail: string(action)}
}

func newSession(hash string, at time.Time) *store.ConsoleSession {
	return &store.ConsoleSession{Hash: hash, Serial: "0a", Identity: "spiffe://example.test/mica/admin/a", Roles: []string{"admin", "security"},
		Method: "link", Source: "192.0.2.9", CreatedAt: at, ExpiresAt: at.Add(time.Hour)}
}

// testConsole: a link is redeemed once, only before it expires, and only
// by one of two stores racing on one database; sessions end once; every
// change has its audit leaf; nothing is written by a refused change.
func testConsole(t *testing.T, open Opener) {
	s := openStore(t, open)
	ctx := context.Background()
	link := &store.ConsoleLink{Hash: "h1", Serial: "0a", Identity: "spiffe://example.test/mica/admin/a", Roles: []string{"admin", "security"},
		CreatedAt: base, ExpiresAt: base.Add(time.Minute)}
	ev := consoleEvent(store.ActionConsoleLinkCreated)
	if err := s.CreateConsoleLink(ctx, link, ev); err != nil {
		t.Fatal(err)
	}
	if ev.Seq == 0 || ev.LeafIndex < 0 {
		t.Fatalf("the link's event was not recorded: %+v", ev)
	}
	if err := s.CreateConsoleLink(ctx, link, consoleEvent(store.ActionConsoleLinkCreated)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("the same link twice: %v, want ErrConflict", err)
	}
	got, err := s.ConsoleLink(ctx, "h1")
	if err != nil || got.Serial != "0a" || !slices.Equal(got.Roles, link.Roles) || !got.ExpiresAt.Equal(link.ExpiresAt) || !got.UsedAt.IsZero() {
		t.Fatalf("ConsoleLink = %+v, %v", got, err)
	}
	if _, err := s.ConsoleLink(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown link: %v, want ErrNotFound", err)
	}

	before := len(allEvents(t, s))
	// Expired: refused, and nothing written.
	if err := s.RedeemConsoleLink(ctx, "h1", newSession("late", base.Add(time.Minute)), consoleEvent(store.ActionConsoleSessionCreated)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("redeeming an expired link: %v, want ErrConflict", err)
	}
	if err := s.RedeemConsoleLink(ctx, "unknown", newSession("u", base), consoleEvent(store.ActionConsoleSessionCreated)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("redeeming an unknown link: %v, want ErrConflict", err)
	}
	if _, err := s.ConsoleSession(ctx, "late"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused redemption opened a session: %v", err)
	}
	if n := len(allEvents(t, s)); n != before {
		t.Errorf("refused redemptions wrote %d events", n-before)
	}
	ev = consoleEvent(store.ActionConsoleSessionCreated)
	if err := s.RedeemConsoleLink(ctx, "h1", newSession("s1", base.Add(30*time.Second)), ev); err != nil {
		t.Fatal(err)
	}
	if ev.Seq == 0 {
		t.Errorf("the session's event was not recorded: %+v", ev)
	}
	if err := s.RedeemConsoleLink(ctx, "h1", newSession("s2", base.Add(31*time.Second)), consoleEvent(store.ActionConsoleSessionCreated)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("redeeming a link twice: %v, want ErrConflict", err)
	}
	if got, _ := s.ConsoleLink(ctx, "h1"); !got.UsedAt.Equal(base.Add(30 * time.Second)) {
		t.Errorf("used_at = %v", got.UsedAt)
	}
	sess, err := s.ConsoleSession(ctx, "s1")
	if err != nil || sess.Serial != "0a" || sess.Method != "link" || sess.Source != "192.0.2.9" || !slices.Equal(sess.Roles, []string{"admin", "security"}) ||
		!sess.CreatedAt.Equal(base.Add(30*time.Second)) || !sess.EndedAt.IsZero() {
		t.Fatalf("ConsoleSession = %+v, %v", sess, err)
	}

	// A session without a link; both lapse; ending is once.
	cert := newSession("c1", base)
	cert.Method, cert.Roles = "certificate", nil
	if err := s.CreateConsoleSession(ctx, cert, consoleEvent(store.ActionConsoleSessionCreated)); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ConsoleSession(ctx, "c1"); err != nil || got.Roles == nil || len(got.Roles) != 0 {
		t.Errorf("no roles read back as %#v, %v", got.Roles, err)
	}
	lapsed, err := s.LapsedConsoleSessions(ctx, base.Add(2*time.Hour), 0)
	if err != nil || len(lapsed) != 2 || lapsed[0].Hash != "c1" || lapsed[1].Hash != "s1" {
		t.Fatalf("LapsedConsoleSessions = %+v, %v", lapsed, err)
	}
	if err := s.EndConsoleSession(ctx, "s1", base.Add(time.Minute), "signed out", consoleEvent(store.ActionConsoleSessionEnded)); err != nil {
		t.Fatal(err)
	}
	if err := s.EndConsoleSession(ctx, "s1", base.Add(2*time.Minute), "again", consoleEvent(store.ActionConsoleSessionEnded)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("ending a session twice: %v, want ErrConflict", err)
	}
	if got, _ := s.ConsoleSession(ctx, "s1"); got.EndReason != "signed out" || !got.EndedAt.Equal(base.Add(time.Minute)) {
		t.Errorf("ended session = %+v", got)
	}
	if lapsed, _ := s.LapsedConsoleSessions(ctx, base.Add(2*time.Hour), 0); len(lapsed) != 1 || lapsed[0].Hash != "c1" {
		t.Errorf("after ending s1, lapsed = %+v", lapsed)
	}
	if err := s.PurgeConsole(ctx, base.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ConsoleLink(ctx, "h1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("purged link still there: %v", err)
	}
	if _, err := s.ConsoleSession(ctx, "s1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("purged ended session still there: %v", err)
	}
	if _, err := s.ConsoleSession(ctx, "c1"); err != nil {
		t.Errorf("an open session was purged: %v", err)
	}

	t.Run("TwoStoresOneLink", func(t *testing.T) {
		s2 := openStore(t, open)
		l := &store.ConsoleLink{Hash: "race", Serial: "0b", CreatedAt: base, ExpiresAt: base.Add(time.Minute)}
		if err := s.CreateConsoleLink(ctx, l, consoleEvent(store.ActionConsoleLinkCreated)); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for i := range errs {
			st := store.Store(s)
			if i%2 == 1 {
				st = s2
			}
			wg.Go(func() {
				errs[i] = st.RedeemConsoleLink(ctx, "race", newSession(fmt.Sprintf("race-%d", i), base.Add(time.Second)), consoleEvent(store.ActionConsoleSessionCreated))
			})
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, store.ErrConflict):
				t.Errorf("racing redemption: %v", err)
			}
		}
		if ok != 1 {
			t.Errorf("%d of %d racing redemptions succeeded, want exactly 1", ok, len(errs))
		}
	})
}

// testExpiryTimeline: live certificates counted per day of the window and
// per profile; revoked, expired and later ones left out.
func testExpiryTimeline(t *testing.T, open Opener) {
	s := openStore(t, open)
	ctx := context.Background()
	from := base.Truncate(24 * time.Hour)
	add := func(profile, owner string, at time.Time) *store.Issuance {
		iss := NewIssuance(0)
		iss.Certificate.Profile, iss.Event.Profile, iss.Certificate.Owner = profile, profile, owner
		iss.Certificate.NotAfter = at
		record(t, s, iss)
		return iss
	}
	add("web", "alice", base.Add(time.Minute))            // day 0
	add("web", "alice", from.Add(24*time.Hour-1))         // day 0, its last microsecond
	add("web", "bob", from.Add(24*time.Hour))             // day 1
	add("batch", "bob", from.Add(24*time.Hour+time.Hour)) // day 1
	add("batch", "bob", from.Add(89*24*time.Hour))        // day 89
	add("batch", "bob", from.Add(90*24*time.Hour))        // past the window
	add("batch", "bob", base.Add(-time.Second))           // expired
	revoked := add("web", "alice", base.Add(time.Hour))
	ev := newEvent(store.ActionCertRevoked, revoked.Certificate.Identity)
	ev.Serial = revoked.Certificate.Serial
	if err := s.Revoke(ctx, revoked.Certificate.Serial, 1, base, ev); err != nil {
		t.Fatal(err)
	}
	got, err := s.ExpiryTimeline(ctx, store.TimelineFilter{Now: base, From: from, Days: 90})
	if err != nil {
		t.Fatal(err)
	}
	type key struct {
		day     int
		profile string
	}
	have := map[key]int64{}
	for _, c := range got {
		have[key{c.Day, c.Profile}] += c.Count
	}
	want := map[key]int64{{0, "web"}: 2, {1, "web"}: 1, {1, "batch"}: 1, {89, "batch"}: 1}
	if fmt.Sprint(have) != fmt.Sprint(want) {
		t.Errorf("ExpiryTimeline = %v, want %v", have, want)
	}
	for _, bad := range []store.TimelineFilter{{Now: base, From: from, Days: 0}, {Now: base, From: from, Days: 10000}, {Now: base, From: base.Add(time.Hour), Days: 1}} {
		if _, err := s.ExpiryTimeline(ctx, bad); err == nil {
			t.Errorf("ExpiryTimeline(%+v) accepted", bad)
		}
	}

	// The owner filter of the inventory.
	list, err := s.ListCertificates(ctx, store.Filter{Owner: "alice"})
	if err != nil || len(list) != 3 {
		t.Fatalf("owner alice: %d certificates, %v; want 3", len(list), err)
	}
	for _, c := range list {
		if c.Owner != "alice" {
			t.Errorf("owner filter returned %q", c.Owner)
		}
	}
	if n, err := s.CountCertificates(ctx, store.Filter{Owner: "bob", Status: store.StatusActive, Now: base}); err != nil || n != 4 {
		t.Errorf("bob's live certificates: %d, %v; want 4", n, err)
	}
}
