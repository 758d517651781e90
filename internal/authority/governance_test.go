package authority_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
	"github.com/mica-pki/mica/internal/policy"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/enginetest"
	"github.com/mica-pki/mica/internal/store/postgres/pgtest"
)

var cluster pgtest.Cluster

func TestMain(m *testing.M) { os.Exit(cluster.Run(m)) }

const (
	sec1   = "spiffe://example.org/mica/admin/sec1"
	sec2   = "spiffe://example.org/mica/admin/sec2"
	admin2 = "spiffe://example.org/mica/admin/admin2"
	dbi    = "spiffe://example.org/mica/admin/dbi"
	oncall = "spiffe://example.org/mica/admin/oncall"
)

// govFixture is an authority whose policy has a governance part: two
// security approvers for tokens of profile wide, one more admin for CA
// rotation, policy changes and role grants, wide privileged, a role scoped
// to database identities, and an on-call role that may break the glass.
type govFixture struct {
	*authoritytest.Fixture
	now                             time.Time
	sec1, sec2, admin2, dbi, oncall authority.Principal
	rotated                         []string
}

func newGovFixture(t *testing.T, st store.Store) *govFixture {
	g := &govFixture{now: time.Now()}
	gov := authority.Governance{
		Admins: map[string]authority.RoleList{
			authoritytest.AdminID: {"admin"}, authoritytest.OperatorID: {"operator"}, authoritytest.AuditorID: {"auditor"},
			sec1: {"security"}, sec2: {"auditor", "security"}, admin2: {"admin"}, dbi: {"db-issuer"}, oncall: {"on-call"},
		},
		Roles: map[string]authority.RoleConfig{
			"security":  {Permissions: []authority.Permission{authority.PermApprovalDecide, authority.PermApprovalRead, authority.PermAuditRead}},
			"db-issuer": {Permissions: []authority.Permission{authority.PermTokenCreate}, Profiles: []string{"wide"}, Identities: []string{"spiffe://example.org/db/"}},
			"on-call":   {Permissions: []authority.Permission{authority.PermBreakGlass, authority.PermInventoryRead}},
		},
		Approvals: []authority.ApprovalRule{
			{Action: authority.ActTokenCreate, Profiles: []string{"wide"}, Required: 2, Approvers: "security"},
			{Action: authority.ActCARotate, Required: 1, Approvers: authority.RoleAdmin},
			{Action: authority.ActPolicyChange, Required: 1, Approvers: authority.RoleAdmin},
			{Action: authority.ActRoleGrant, Required: 1, Approvers: authority.RoleAdmin},
		},
		PrivilegedProfiles: []string{"wide"},
	}
	pc := authoritytest.PolicyConfig()
	access, err := authority.CompileAccess(gov, "example.org", profileNames(pc))
	if err != nil {
		t.Fatal(err)
	}
	g.Fixture = authoritytest.NewOn(t, st, func(c *authority.Config) {
		c.Access = access
		c.Clock = func() time.Time { return g.now }
		c.Rotate = func(_ context.Context, step string) (string, error) {
			g.rotated = append(g.rotated, step)
			return "rotated: " + step, nil
		}
		c.CompilePolicy = func(doc []byte) (authority.CompiledPolicy, error) {
			if !strings.HasPrefix(string(doc), "profiles:") {
				return authority.CompiledPolicy{}, errors.New("not a policy document")
			}
			eng, err := policy.New(pc)
			return authority.CompiledPolicy{Policy: eng, Access: access}, err
		}
	})
	for name, p := range map[string]*authority.Principal{sec1: &g.sec1, sec2: &g.sec2, admin2: &g.admin2, dbi: &g.dbi, oncall: &g.oncall} {
		*p = g.Principal(t, g.IssueCred(t, authority.ProfileAdmin, name).Issued)
	}
	return g
}

func profileNames(c policy.Config) []string {
	var out []string
	for n := range c.Profiles {
		out = append(out, n)
	}
	return out
}

func pendingID(t *testing.T, what string, err error) string {
	t.Helper()
	var e *authority.Error
	if !errors.As(err, &e) || e.Kind != authority.KindApprovalPending || e.Pending == nil {
		t.Fatalf("%s: err = %v, want it held for approval", what, err)
	}
	return e.Pending.ID
}

// Two of security must approve a token for profile wide; the requester
// collects it once, with exactly the approved parameters; the requester
// never counts, nobody votes twice, and a rejection or expiry ends it.
func TestTokenNeedsTwoApprovers(t *testing.T) {
	enginetest.Each(t, &cluster, func(t *testing.T, st store.Store) {
		g := newGovFixture(t, st)
		ctx := context.Background()
		req := authority.TokenRequest{Identity: "spiffe://example.org/db/main", Profile: "wide", TTL: 10 * time.Minute}
		_, err := g.Authority.CreateToken(ctx, g.Operator, req)
		id := pendingID(t, "operator token for wide", err)

		_, err = g.Authority.Decide(ctx, g.Operator, id, true, "")
		wantRefusal(t, "the requester deciding", err, authority.KindForbidden, "")
		_, err = g.Authority.Decide(ctx, g.Admin, id, true, "")
		wantRefusal(t, "an admin without the security role deciding", err, authority.KindForbidden, "")
		ap, err := g.Authority.Decide(ctx, g.sec1, id, true, "looks right")
		if err != nil || ap.Status != store.ApprovalPending {
			t.Fatalf("first approval: %+v, %v", ap, err)
		}
		_, err = g.Authority.Decide(ctx, g.sec1, id, true, "")
		wantRefusal(t, "voting twice", err, authority.KindConflict, "")
		// A door asking first (the console's buttons) hears the same.
		full, err := g.Authority.Approval(ctx, g.sec1, id)
		if err != nil {
			t.Fatal(err)
		}
		wantRefusal(t, "may the first approver decide again", g.Authority.MayDecide(g.sec1, full), authority.KindConflict, "")
		if err := g.Authority.MayDecide(g.sec2, full); err != nil {
			t.Errorf("the second approver may not decide: %v", err)
		}
		req.Approval = id
		_, err = g.Authority.CreateToken(ctx, g.Operator, req)
		wantRefusal(t, "collecting before the threshold", err, authority.KindConflict, "")
		if ap, err = g.Authority.Decide(ctx, g.sec2, id, true, ""); err != nil || ap.Status != store.ApprovalApproved {
			t.Fatalf("second approval: %+v, %v", ap, err)
		}
		other := req
		other.Identity = "spiffe://example.org/db/other"
		_, err = g.Authority.CreateToken(ctx, g.Operator, other)
		wantRefusal(t, "collecting with other parameters", err, authority.KindConflict, "")
		_, err = g.Authority.CreateToken(ctx, g.Admin, req)
		wantRefusal(t, "collecting someone else's", err, authority.KindForbidden, "")
		tok, err := g.Authority.CreateToken(ctx, g.Operator, req)
		if err != nil || tok.Raw == "" {
			t.Fatalf("collecting: %v", err)
		}
		_, err = g.Authority.CreateToken(ctx, g.Operator, req)
		wantRefusal(t, "collecting twice", err, authority.KindConflict, "")

		// Rejected: over.
		_, err = g.Authority.CreateToken(ctx, g.Operator, authority.TokenRequest{Identity: "spiffe://example.org/db/r", Profile: "wide"})
		rid := pendingID(t, "second request", err)
		if ap, err := g.Authority.Decide(ctx, g.sec2, rid, false, "no"); err != nil || ap.Status != store.ApprovalRejected {
			t.Fatalf("rejection: %+v, %v", ap, err)
		}
		_, err = g.Authority.Decide(ctx, g.sec1, rid, true, "")
		wantRefusal(t, "approving a rejected request", err, authority.KindConflict, "")

		// Expired: over.
		_, err = g.Authority.CreateToken(ctx, g.Operator, authority.TokenRequest{Identity: "spiffe://example.org/db/e", Profile: "wide"})
		eid := pendingID(t, "third request", err)
		g.now = g.now.Add(25 * time.Hour)
		_, err = g.Authority.Decide(ctx, g.sec1, eid, true, "")
		wantRefusal(t, "approving an expired request", err, authority.KindConflict, "")
		if ap, _ := g.Authority.Approval(ctx, g.Auditor, eid); ap.Status != store.ApprovalExpired {
			t.Fatalf("request after its expiry is %s", ap.Status)
		}

		// Tokens for other profiles need no approval.
		if _, err := g.Authority.CreateToken(ctx, g.Operator, authority.TokenRequest{Identity: "spiffe://example.org/billing/a", Profile: "service"}); err != nil {
			t.Fatalf("service token: %v", err)
		}
		// Every step is in the audit log.
		for _, act := range []store.Action{store.ActionApprovalRequested, store.ActionApprovalVoted, store.ActionApprovalApproved,
			store.ActionApprovalExecuted, store.ActionApprovalRejected, store.ActionApprovalExpired} {
			if evs, _ := st.Events(ctx, store.EventFilter{Action: act}); len(evs) == 0 {
				t.Errorf("no %s event", act)
			}
		}
	})
}

// One admin alone cannot rotate the CA, change the policy or grant itself
// (or anyone) a role; two distinct admins can, and the approved request
// runs once, as its requester.
func TestOneAdminAloneCannot(t *testing.T) {
	enginetest.Each(t, &cluster, func(t *testing.T, st store.Store) {
		g := newGovFixture(t, st)
		ctx := context.Background()

		_, err := g.Authority.Rotate(ctx, g.Admin, "prepare")
		id := pendingID(t, "rotate", err)
		if len(g.rotated) != 0 {
			t.Fatal("rotated before approval")
		}
		ap, err := g.Authority.Decide(ctx, g.admin2, id, true, "")
		if err != nil || ap.Status != store.ApprovalExecuted || len(g.rotated) != 1 {
			t.Fatalf("after the second admin: %+v, %v, rotated %v", ap, err, g.rotated)
		}

		_, err = g.Authority.GrantRole(ctx, g.Admin, authority.GrantRequest{Identity: authoritytest.AdminID, Role: "security", For: time.Hour, Reason: "me"})
		gid := pendingID(t, "grant itself a role", err)
		if roles := g.Principal(t, g.AdminIssued).Roles; len(roles) != 1 {
			t.Fatalf("roles before approval: %v", roles)
		}
		if _, err := g.Authority.Decide(ctx, g.admin2, gid, true, ""); err != nil {
			t.Fatal(err)
		}
		if roles := g.Principal(t, g.AdminIssued).Roles; len(roles) != 2 {
			t.Fatalf("roles after approval: %v, want admin and security", roles)
		}
		g.now = g.now.Add(2 * time.Hour)
		if roles := g.Principal(t, g.AdminIssued).Roles; len(roles) != 1 {
			t.Fatalf("roles after the grant ran out: %v", roles)
		}

		_, err = g.Authority.ProposePolicy(ctx, g.Admin, []byte("profiles: {v2: {}}"), "widen")
		pid := pendingID(t, "policy change", err)
		if g.Authority.PolicyVersion() != 0 {
			t.Fatal("policy applied before approval")
		}
		if _, err := g.Authority.Decide(ctx, g.admin2, pid, true, ""); err != nil {
			t.Fatal(err)
		}
		if v := g.Authority.PolicyVersion(); v != 1 {
			t.Fatalf("policy version %d applied, want 1", v)
		}
		_, err = g.Authority.ProposePolicy(ctx, g.Admin, []byte("not a policy"), "")
		wantRefusal(t, "a policy that does not check", err, authority.KindInvalid, "")
	})
}

// Separation of duties: the administrator who answers for a certificate
// under a privileged profile may not revoke it alone; another may.
func TestOwnerCannotRevokePrivilegedAlone(t *testing.T) {
	enginetest.Each(t, &cluster, func(t *testing.T, st store.Store) {
		g := newGovFixture(t, st)
		ctx := context.Background()
		enroll := func() string {
			return g.EnrollCred(t, "service", "spiffe://example.org/billing/a").Issued.Record.Serial
		}
		// Ordinary profile: the owner revokes alone.
		if _, err := g.Authority.Revoke(ctx, g.Admin, enroll(), 1, netip0()); err != nil {
			t.Fatalf("revoking under an ordinary profile: %v", err)
		}
		tok, err := g.Authority.CreateToken(ctx, g.Admin, authority.TokenRequest{Identity: "spiffe://example.org/x/priv", Profile: "wide"})
		// Even an admin's token for wide needs the security approvals.
		tid := pendingID(t, "admin token for wide", err)
		g.Authority.Decide(ctx, g.sec1, tid, true, "")
		g.Authority.Decide(ctx, g.sec2, tid, true, "")
		tok, err = g.Authority.CreateToken(ctx, g.Admin, authority.TokenRequest{Identity: "spiffe://example.org/x/priv", Profile: "wide", Approval: tid})
		if err != nil {
			t.Fatal(err)
		}
		iss, err := g.Authority.Enroll(ctx, authority.EnrollRequest{Token: tok.Raw, CSR: authoritytest.CSR(t)})
		if err != nil {
			t.Fatal(err)
		}
		_, err = g.Authority.Revoke(ctx, g.Admin, iss.Record.Serial, 1, netip0())
		rid := pendingID(t, "owner revoking its privileged certificate", err)
		if _, err := g.Authority.Decide(ctx, g.admin2, rid, true, ""); err != nil {
			t.Fatal(err)
		}
		if rec, _ := st.Certificate(ctx, iss.Record.Serial); rec.Status != store.StatusRevoked {
			t.Fatalf("after approval the certificate is %s", rec.Status)
		}
	})
}

// The matrix: each role × each permission-bearing action, with scopes.
func TestGovernanceMatrix(t *testing.T) {
	enginetest.Each(t, &cluster, func(t *testing.T, st store.Store) {
		g := newGovFixture(t, st)
		tests := []struct {
			who  authority.Principal
			name string
			act  authority.Action
			res  authority.Resource
			ok   bool
		}{
			{g.dbi, "dbi", authority.ActTokenCreate, authority.Resource{Profile: "wide", Identity: "spiffe://example.org/db/x"}, true},
			{g.dbi, "dbi", authority.ActTokenCreate, authority.Resource{Profile: "wide", Identity: "spiffe://example.org/web/x"}, false},
			{g.dbi, "dbi", authority.ActTokenCreate, authority.Resource{Profile: "service", Identity: "spiffe://example.org/db/x"}, false},
			{g.dbi, "dbi", authority.ActCertList, authority.Resource{}, false},
			{g.sec1, "sec1", authority.ActApprovalDecide, authority.Resource{Role: "security"}, true},
			{g.sec1, "sec1", authority.ActApprovalDecide, authority.Resource{Role: authority.RoleAdmin}, false},
			{g.Admin, "admin", authority.ActApprovalDecide, authority.Resource{Role: "security"}, false},
			{g.sec1, "sec1", authority.ActTokenCreate, authority.Resource{Profile: "service"}, false},
			{g.sec2, "sec2", authority.ActCertList, authority.Resource{}, true}, // auditor too
			{g.oncall, "oncall", authority.ActBreakGlass, authority.Resource{}, true},
			{g.oncall, "oncall", authority.ActRoleGrant, authority.Resource{}, false},
			{g.Operator, "operator", authority.ActPolicyPropose, authority.Resource{}, false},
			{g.Admin, "admin", authority.ActPolicyPropose, authority.Resource{}, true},
			{g.Auditor, "auditor", authority.ActPolicyRead, authority.Resource{}, true},
			{g.Auditor, "auditor", authority.ActApprovalRead, authority.Resource{}, true},
			{g.dbi, "dbi", authority.ActApprovalRead, authority.Resource{Requester: dbi}, true},
			{g.dbi, "dbi", authority.ActApprovalRead, authority.Resource{Requester: sec1}, false},
		}
		for _, tt := range tests {
			err := g.Authority.Authorize(tt.who, tt.act, tt.res)
			if (err == nil) != tt.ok {
				t.Errorf("%s %s %+v: %v, want allowed = %v", tt.name, tt.act, tt.res, err, tt.ok)
			}
		}
	})
}

// Break-glass: an on-call engineer grants itself a role at once, briefly,
// with a reason; it is its own audit action; nobody breaks the glass for
// someone else, and not for longer than the policy allows.
func TestBreakGlass(t *testing.T) {
	enginetest.Each(t, &cluster, func(t *testing.T, st store.Store) {
		g := newGovFixture(t, st)
		ctx := context.Background()
		req := authority.GrantRequest{Identity: oncall, Role: authority.RoleAdmin, For: 30 * time.Minute, BreakGlass: true}
		_, err := g.Authority.GrantRole(ctx, g.oncall, req)
		wantRefusal(t, "break-glass without a reason", err, authority.KindInvalid, "")
		req.Reason = "database on fire"
		long := req
		long.For = 2 * time.Hour
		_, err = g.Authority.GrantRole(ctx, g.oncall, long)
		wantRefusal(t, "break-glass longer than the policy allows", err, authority.KindInvalid, "")
		other := req
		other.Identity = dbi
		_, err = g.Authority.GrantRole(ctx, g.oncall, other)
		wantRefusal(t, "break-glass for someone else", err, authority.KindForbidden, "")
		if _, err := g.Authority.GrantRole(ctx, g.oncall, req); err != nil {
			t.Fatal(err)
		}
		p := g.Principal(t, g.IssueCred(t, authority.ProfileAdmin, oncall).Issued)
		if err := g.Authority.Authorize(p, authority.ActServerStats, authority.Resource{}); err != nil {
			t.Fatalf("after breaking the glass: %v", err)
		}
		if evs, _ := st.Events(ctx, store.EventFilter{Action: store.ActionRoleBreakGlass}); len(evs) != 1 || !strings.Contains(evs[0].Detail, "database on fire") {
			t.Fatalf("break-glass events: %+v", evs)
		}
	})
}

// A policy that asks for more approvers than hold the role is refused when
// it is loaded, not when someone is waiting.
func TestImpossibleApprovalRuleRefused(t *testing.T) {
	_, err := authority.CompileAccess(authority.Governance{
		Admins:    map[string]authority.RoleList{authoritytest.AdminID: {"admin"}},
		Approvals: []authority.ApprovalRule{{Action: authority.ActCARotate, Required: 2, Approvers: authority.RoleAdmin}},
	}, "example.org", nil)
	if err == nil || !strings.Contains(err.Error(), "only 1 administrators hold") {
		t.Fatalf("err = %v", err)
	}
}

func netip0() netip.Addr { return netip.Addr{} }
