package authority_test

import (
	"context"
	"crypto/x509"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/enginetest"
)

// consoleEvents counts the console's audit events by action.
func consoleEvents(t *testing.T, st store.Store) map[store.Action]int {
	t.Helper()
	evs, err := st.Events(context.Background(), store.EventFilter{Actions: []store.Action{store.ActionConsoleLinkCreated,
		store.ActionConsoleSessionCreated, store.ActionConsoleSessionEnded}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[store.Action]int{}
	for _, ev := range evs {
		out[ev.Action]++
	}
	return out
}

// A one-time link from an administrator's credential opens one session,
// once, within a minute; the session acts as that credential with its
// roles; signing out ends it; each step is an audit event.
func TestConsoleSignIn(t *testing.T) {
	enginetest.Each(t, &cluster, func(t *testing.T, st store.Store) {
		g := newGovFixture(t, st)
		ctx := context.Background()
		src := netip.MustParseAddr("192.0.2.7")

		workload := g.Principal(t, g.Issue(t, "spiffe://example.org/billing/api"))
		_, err := g.Authority.CreateConsoleLink(ctx, workload, src)
		wantRefusal(t, "a workload asking for a console link", err, authority.KindForbidden, "")
		_, err = g.Authority.CreateConsoleLink(ctx, authority.Principal{}, src)
		wantRefusal(t, "nobody asking for a console link", err, authority.KindUnauthenticated, "")

		link, err := g.Authority.CreateConsoleLink(ctx, g.Operator, src)
		if err != nil || link.Identity != authoritytest.OperatorID || !link.ExpiresAt.Equal(g.now.Add(authority.ConsoleLinkTTL)) {
			t.Fatalf("operator's link: %+v, %v", link, err)
		}
		if who, err := g.Authority.ConsoleLinkIdentity(ctx, link.Secret); err != nil || who != authoritytest.OperatorID {
			t.Fatalf("ConsoleLinkIdentity = %q, %v", who, err)
		}
		sess, err := g.Authority.OpenConsoleSession(ctx, link.Secret, src)
		if err != nil || sess.Secret == "" || sess.Principal.Name != authoritytest.OperatorID ||
			!slices.Equal(sess.Principal.Roles, []authority.Role{authority.RoleOperator}) {
			t.Fatalf("OpenConsoleSession = %+v, %v", sess, err)
		}
		if !sess.ExpiresAt.Equal(g.now.Add(authority.ConsoleSessionTTL)) {
			t.Errorf("session expires %v, want %v", sess.ExpiresAt, g.now.Add(authority.ConsoleSessionTTL))
		}
		_, err = g.Authority.OpenConsoleSession(ctx, link.Secret, src)
		wantRefusal(t, "the link a second time", err, authority.KindUnauthenticated, "")
		_, err = g.Authority.ConsoleLinkIdentity(ctx, link.Secret)
		wantRefusal(t, "reading a used link", err, authority.KindUnauthenticated, "")
		for _, bad := range []string{"", "x", strings.Repeat("A", 43), link.Secret + "A", sess.Secret} {
			_, err = g.Authority.OpenConsoleSession(ctx, bad, src)
			wantRefusal(t, "a forged link "+bad, err, authority.KindUnauthenticated, "")
		}

		got, err := g.Authority.ResumeConsoleSession(ctx, sess.Secret)
		if err != nil || got.Principal.Name != authoritytest.OperatorID || got.Principal.Record.Serial != g.Operator.Record.Serial || got.ID != sess.ID {
			t.Fatalf("ResumeConsoleSession = %+v, %v", got, err)
		}
		// It acts with the operator's permissions, and no more.
		if err := g.Authority.Authorize(got.Principal, authority.ActCertList, authority.Resource{}); err != nil {
			t.Errorf("session listing the inventory: %v", err)
		}
		if err := g.Authority.MayRevoke(got.Principal, store.Certificate{Serial: "0a", Profile: "service"}); authority.KindOf(err) != authority.KindForbidden {
			t.Errorf("operator session may revoke: %v", err)
		}
		_, err = g.Authority.ResumeConsoleSession(ctx, link.Secret)
		wantRefusal(t, "the link as a session", err, authority.KindUnauthenticated, "")

		// A link not opened within a minute is dead.
		late, err := g.Authority.CreateConsoleLink(ctx, g.Auditor, src)
		if err != nil {
			t.Fatal(err)
		}
		g.now = g.now.Add(authority.ConsoleLinkTTL)
		_, err = g.Authority.OpenConsoleSession(ctx, late.Secret, src)
		wantRefusal(t, "a link after a minute", err, authority.KindUnauthenticated, "")

		if err := g.Authority.EndConsoleSession(ctx, sess.Secret, "signed out"); err != nil {
			t.Fatal(err)
		}
		_, err = g.Authority.ResumeConsoleSession(ctx, sess.Secret)
		wantRefusal(t, "a session after signing out", err, authority.KindUnauthenticated, "")
		want := map[store.Action]int{store.ActionConsoleLinkCreated: 2, store.ActionConsoleSessionCreated: 1, store.ActionConsoleSessionEnded: 1}
		if got := consoleEvents(t, st); !mapsEqual(got, want) {
			t.Errorf("console events %v, want %v", got, want)
		}

		// A browser's client certificate: the chain is judged like any.
		chain := []*x509.Certificate{g.AuditorCred.Issued.Certificate, g.AuditorCred.Issued.Chain[0]}
		cs, err := g.Authority.OpenConsoleSessionWithCertificate(ctx, chain, src)
		if err != nil || cs.Method != authority.ConsoleByCertificate || cs.Principal.Name != authoritytest.AuditorID {
			t.Fatalf("certificate session: %+v, %v", cs, err)
		}
		w := g.Issue(t, "spiffe://example.org/billing/web")
		_, err = g.Authority.OpenConsoleSessionWithCertificate(ctx, []*x509.Certificate{w.Certificate, w.Chain[0]}, src)
		wantRefusal(t, "a workload's certificate", err, authority.KindForbidden, "")
	})
}

func mapsEqual[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// A session's powers are its credential's now: an ended grant takes its
// role away at the next request, a grant made later adds nothing, and a
// revoked credential or the end of the session's time ends it.
func TestConsoleSessionLosesPowers(t *testing.T) {
	enginetest.Each(t, &cluster, func(t *testing.T, st store.Store) {
		g := newGovFixture(t, st)
		ctx := context.Background()
		src := netip.MustParseAddr("192.0.2.7")
		if _, err := g.Authority.GrantRole(ctx, g.oncall, authority.GrantRequest{Identity: oncall, Role: authority.RoleAdmin,
			For: 30 * time.Minute, Reason: "paged: CA alert", BreakGlass: true}); err != nil {
			t.Fatal(err)
		}
		oncallNow := g.Principal(t, g.IssueCred(t, authority.ProfileAdmin, oncall).Issued)
		open := func(p authority.Principal) authority.ConsoleSession {
			t.Helper()
			l, err := g.Authority.CreateConsoleLink(ctx, p, src)
			if err != nil {
				t.Fatal(err)
			}
			s, err := g.Authority.OpenConsoleSession(ctx, l.Secret, src)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		s := open(oncallNow)
		svc := g.Issue(t, "spiffe://example.org/billing/api").Record
		p, err := g.Authority.ResumeConsoleSession(ctx, s.Secret)
		if err != nil || !slices.Contains(p.Principal.Roles, authority.RoleAdmin) || g.Authority.MayRevoke(p.Principal, svc) != nil {
			t.Fatalf("with the grant: %+v, %v", p.Principal.Roles, err)
		}
		g.now = g.now.Add(31 * time.Minute)
		p, err = g.Authority.ResumeConsoleSession(ctx, s.Secret)
		if err != nil || slices.Contains(p.Principal.Roles, authority.RoleAdmin) {
			t.Fatalf("after the grant ended: %+v, %v", p.Principal.Roles, err)
		}
		if err := g.Authority.MayRevoke(p.Principal, svc); authority.KindOf(err) != authority.KindForbidden {
			t.Errorf("the session may still revoke after its grant ended: %v", err)
		}

		// Signed in as operator; made admin afterwards: still operator.
		op := open(g.Operator)
		_, err = g.Authority.GrantRole(ctx, g.Admin, authority.GrantRequest{Identity: authoritytest.OperatorID, Role: authority.RoleAdmin,
			For: time.Hour, Reason: "release"})
		if ap, err := g.Authority.Decide(ctx, g.admin2, pendingID(t, "grant", err), true, ""); err != nil || ap.Status != store.ApprovalExecuted {
			t.Fatalf("granting admin to the operator: %+v, %v", ap, err)
		}
		if p, err := g.Authority.ResumeConsoleSession(ctx, op.Secret); err != nil || !slices.Equal(p.Principal.Roles, []authority.Role{authority.RoleOperator}) {
			t.Errorf("a later grant reached an open session: %+v, %v", p.Principal.Roles, err)
		}

		// The credential revoked: the session ends at its next request.
		if _, err := g.Authority.Revoke(ctx, g.Admin, g.Operator.Record.Serial, 1, src); err != nil {
			t.Fatal(err)
		}
		_, err = g.Authority.ResumeConsoleSession(ctx, op.Secret)
		wantRefusal(t, "a session of a revoked credential", err, authority.KindUnauthenticated, "")
		if !strings.Contains(err.Error(), "revoked") {
			t.Errorf("refusal does not say why: %v", err)
		}

		// Time up: the next request, or the sweeper, records the end.
		aud := open(g.Auditor)
		g.now = g.now.Add(authority.ConsoleSessionTTL)
		n, err := g.Authority.EndLapsedConsoleSessions(ctx)
		if err != nil || n != 2 { // the on-call's and the auditor's
			t.Errorf("EndLapsedConsoleSessions = %d, %v; want 2", n, err)
		}
		_, err = g.Authority.ResumeConsoleSession(ctx, aud.Secret)
		wantRefusal(t, "a lapsed session", err, authority.KindUnauthenticated, "")
		want := map[store.Action]int{store.ActionConsoleLinkCreated: 3, store.ActionConsoleSessionCreated: 3, store.ActionConsoleSessionEnded: 3}
		if got := consoleEvents(t, st); !mapsEqual(got, want) {
			t.Errorf("console events %v, want %v", got, want)
		}

		// The timeline is a report: a workload may not read it.
		w := g.Principal(t, g.Issue(t, "spiffe://example.org/billing/x"))
		_, _, err = g.Authority.ExpiryTimeline(ctx, w, 90)
		wantRefusal(t, "a workload's timeline", err, authority.KindForbidden, "")
		counts, from, err := g.Authority.ExpiryTimeline(ctx, g.Auditor, 90)
		if err != nil || from.After(g.now) || len(counts) == 0 {
			t.Errorf("auditor's timeline: %v from %v, %v", counts, from, err)
		}
	})
}
