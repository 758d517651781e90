package authority

import (
	"fmt"
	"slices"
	"strings"

	"github.com/mica-pki/mica/internal/store"
)

// This file is the whole access model: every "who may" of every door is
// answered by Authorize, from the table below and the roles of the policy
// (access.go). A door never decides; it asks (through the Authority's
// methods, which call Authorize first).
//
// Who holds which credential:
//   - a workload holds a certificate under an ordinary profile: it may act
//     on its own certificate only (renew, read, revoke, prove) and mint
//     JWT-SVIDs for its own SPIFFE ID;
//   - an administrator holds a certificate issued under the reserved
//     profile mica-admin (recorded in the inventory) AND is given roles by
//     the policy's admins section or a time-bound grant; the roles come
//     from the credential, never from a name alone (see rolesOf);
//   - a token holder may enroll exactly the identity and profile the token
//     is bound to, once (see Enroll: the token is the authorization).
// Sensitive actions may further need approvals by other people
// (approvals.go), decided after Authorize allows the requester.

// Permission is one thing a role allows.
type Permission string

const (
	PermTokenCreate         Permission = "token:create"          // tokens for ordinary profiles
	PermTokenCreateReserved Permission = "token:create-reserved" // tokens for mica-* profiles (new administrators)
	PermInventoryRead       Permission = "inventory:read"        // any certificate record, the deny list
	PermCertRevoke          Permission = "cert:revoke"           // any certificate, one or all of an identity
	PermIdentityDeny        Permission = "identity:deny"         // the deny list: deny and allow
	PermAuditRead           Permission = "audit:read"            // checkpoints, leaves, events, any proof
	PermReportRead          Permission = "report:read"           // the expiry report
	PermServerStats         Permission = "server:stats"          // the server's own figures
	PermPolicyPropose       Permission = "policy:propose"        // propose a policy version
	PermPolicyApprove       Permission = "policy:approve"        // activate a proposed version (or roll back)
	PermCARotate            Permission = "ca:rotate"             // force a CA rotation step
	PermApprovalDecide      Permission = "approval:decide"       // approve or reject others' requests
	PermRoleGrant           Permission = "role:grant"            // grant roles for a time, revoke grants
	PermApprovalRead        Permission = "approval:read"         // see every request (requesters see their own)
	PermBreakGlass          Permission = "role:break-glass"      // grant oneself a role at once, briefly, with an alert
	PermDiscoveryReport     Permission = "discovery:report"      // report certificates found deployed
)

// Permissions lists every permission, for config validation and docs.
var Permissions = []Permission{PermTokenCreate, PermTokenCreateReserved, PermInventoryRead, PermCertRevoke,
	PermIdentityDeny, PermAuditRead, PermReportRead, PermServerStats, PermPolicyPropose, PermPolicyApprove,
	PermCARotate, PermApprovalDecide, PermRoleGrant, PermApprovalRead, PermBreakGlass, PermDiscoveryReport}

// Role names a set of grants. The built-in roles are ranked (auditor ⊂
// operator ⊂ admin); a policy may define more.
type Role string

const (
	RoleNone     Role = ""         // a workload: its own certificate only
	RoleAuditor  Role = "auditor"  // reads: inventory, deny list, audit log, reports, approvals
	RoleOperator Role = "operator" // auditor + tokens for ordinary profiles
	RoleAdmin    Role = "admin"    // everything
)

// Grant is one permission, optionally narrowed to profiles and to
// identities (SPIFFE ID prefixes or exact names).
type Grant struct {
	Perm       Permission
	Profiles   []string // empty: any profile
	Identities []string // empty: any identity
}

// builtinRoles are the three roles every policy has.
var builtinRoles = map[Role][]Grant{
	RoleAuditor:  grants(PermInventoryRead, PermAuditRead, PermReportRead, PermApprovalRead),
	RoleOperator: grants(PermInventoryRead, PermAuditRead, PermReportRead, PermApprovalRead, PermTokenCreate, PermDiscoveryReport),
	RoleAdmin:    grants(Permissions...),
}

func grants(ps ...Permission) []Grant {
	out := make([]Grant, len(ps))
	for i, p := range ps {
		out[i] = Grant{Perm: p}
	}
	return out
}

// ParseRole reads one of the built-in role names.
func ParseRole(s string) (Role, error) {
	if _, ok := builtinRoles[Role(s)]; ok {
		return Role(s), nil
	}
	return RoleNone, fmt.Errorf("authority: unknown role %q: use admin, operator or auditor, or define it under roles", s)
}

// Action is a request a principal makes of the authority.
type Action string

const (
	ActTokenCreate      Action = "token.create"      // Resource.Profile, Resource.Identity
	ActRenew            Action = "cert.renew"        // the presented certificate
	ActCertRead         Action = "cert.read"         // Resource.Serial
	ActCertList         Action = "cert.list"         // the inventory
	ActCertRevoke       Action = "cert.revoke"       // Resource.Serial (and its Profile, Identity, Owner)
	ActIdentityRevoke   Action = "identity.revoke"   // every certificate of Resource.Identity
	ActIdentityDeny     Action = "identity.deny"     // deny and allow Resource.Identity
	ActDenyListRead     Action = "identity.list"     // the deny list
	ActAuditRead        Action = "audit.read"        // checkpoints, leaves, events, consistency
	ActAuditProof       Action = "audit.proof"       // Resource.Serial
	ActReportRead       Action = "report.read"       // the expiry report
	ActServerStats      Action = "server.stats"      // the server's figures
	ActJWTSVID          Action = "jwt-svid.mint"     // for the caller's own SPIFFE ID
	ActFeedSubscribe    Action = "feed.subscribe"    // the revocation push feed
	ActPolicyPropose    Action = "policy.propose"    // a new policy version
	ActPolicyChange     Action = "policy.change"     // activate a version (the approvable step)
	ActPolicyRead       Action = "policy.read"       // versions and documents
	ActCARotate         Action = "ca.rotate"         // force a rotation step
	ActRoleGrant        Action = "role.grant"        // Resource.Identity, Resource.Role
	ActBreakGlass       Action = "role.break-glass"  // a grant to oneself, at once
	ActApprovalDecide   Action = "approval.decide"   // Resource.Role: the approvers' role
	ActApprovalRead     Action = "approval.read"     // Resource.Requester: own requests need nothing
	ActDiscoveryReport  Action = "discovery.report"  // certificates found deployed
	ActDiscoveryRead    Action = "discovery.read"    // discovered certificates
	ActWebhookRead      Action = "webhook.read"      // webhook delivery state
	ActACMERevoke       Action = "acme.revoke"       // Resource.Serial, by the ordering account or the certificate's key
	ActConsoleSignIn    Action = "console.sign-in"   // open a web console session (console.go)
	ActEnroll           Action = "cert.enroll"       // Resource.Profile, Resource.Identity: the token's
	ActACMEIssue        Action = "acme.issue"        // Resource.Identity: the order's validated identifiers
	ActInternalIssuance Action = "internal.issuance" // mica issuing for itself
)

// Resource is what an action is about; only the fields the action names
// are read.
type Resource struct {
	Serial   string // canonical (see ParseSerial)
	Profile  string
	Identity string // the identity's primary name
	// Requester is who the certificate named by Serial was issued to
	// (store.Certificate.Requester) or who made an approval request.
	Requester string
	// Owner answers for the certificate named by Serial.
	Owner string
	// Role is the role an approval's approvers must hold, or the role a
	// grant gives.
	Role Role
}

// rule is one row of the table: the permission that allows the action for
// anybody's resource, and who needs no permission.
type rule struct {
	perm     Permission // "" when no role allows it for others
	ownCert  bool       // the caller's own certificate (Resource.Serial) needs no permission
	self     bool       // the action is on the presented certificate itself: every holder may
	anyPeer  bool       // every authenticated caller may
	ownReq   bool       // the caller's own approval requests need no permission
	anyRole  bool       // every caller holding at least one role may
	scoped   bool       // the grant's profile and identity scope applies
	reserved Permission // for a reserved profile this permission is needed instead
	what     string     // for refusals: "read the inventory"
}

// table answers "who may" for every action. Read it as: the action is
// allowed when one of the caller's grants has perm (within its scope when
// scoped), or ownCert and the resource is the caller's own certificate, or
// self, or anyPeer, or ownReq and the caller made the request.
var table = map[Action]rule{
	ActTokenCreate:    {perm: PermTokenCreate, scoped: true, reserved: PermTokenCreateReserved, what: "create tokens"},
	ActRenew:          {self: true, what: "renew"},
	ActCertRead:       {perm: PermInventoryRead, ownCert: true, what: "read the inventory"},
	ActCertList:       {perm: PermInventoryRead, what: "read the inventory"},
	ActCertRevoke:     {perm: PermCertRevoke, ownCert: true, scoped: true, what: "revoke other certificates"},
	ActIdentityRevoke: {perm: PermCertRevoke, scoped: true, what: "revoke certificates by identity"},
	ActIdentityDeny:   {perm: PermIdentityDeny, scoped: true, what: "change the deny list"},
	ActDenyListRead:   {perm: PermInventoryRead, what: "read the deny list"},
	ActAuditRead:      {perm: PermAuditRead, what: "read the audit log"},
	ActAuditProof:     {perm: PermAuditRead, ownCert: true, what: "read the audit log"},
	ActReportRead:     {perm: PermReportRead, what: "read the expiry report"},
	ActServerStats:    {perm: PermServerStats, what: "read the server's stats"},
	ActJWTSVID:        {self: true, what: "mint JWT-SVIDs"},
	ActFeedSubscribe:  {anyPeer: true, what: "follow the revocation feed"},
	ActPolicyPropose:  {perm: PermPolicyPropose, what: "propose policy versions"},
	ActPolicyChange:   {perm: PermPolicyApprove, what: "change the active policy"},
	ActPolicyRead:     {perm: PermAuditRead, what: "read the policy versions"},
	ActCARotate:       {perm: PermCARotate, what: "rotate the CA"},
	ActRoleGrant:      {perm: PermRoleGrant, what: "grant roles"},
	ActBreakGlass:     {perm: PermBreakGlass, what: "break the glass"},
	ActApprovalDecide: {perm: PermApprovalDecide, what: "decide approval requests"},
	ActApprovalRead:   {perm: PermApprovalRead, ownReq: true, what: "read approval requests"},
	ActConsoleSignIn:  {anyRole: true, what: "sign in to the web console"},
	ActDiscoveryRead:  {perm: PermInventoryRead, what: "read discovered certificates"},
	// Delivery state names events, never secrets: who may read the audit
	// log may read it.
	ActWebhookRead: {perm: PermAuditRead, what: "read webhook delivery state"},
	// Workloads under the config's discovery.agent_profiles may report
	// too (Authority.Authorize).
	ActDiscoveryReport: {perm: PermDiscoveryReport, what: "report discovered certificates"},
}

// Authorize says whether p may do act on res under the current access
// model: nil, or a KindForbidden error that names what is missing. It is
// the only place that compares a principal with a permission.
func (a *Authority) Authorize(p Principal, act Action, res Resource) error {
	if act == ActDiscoveryReport && len(p.Roles) == 0 && p.Record.Status == store.StatusActive && a.discovery.reporters[p.Record.Profile] {
		return nil // an agent reporting what it found on its host
	}
	return a.access().authorize(p, act, res)
}

func (m *AccessModel) authorize(p Principal, act Action, res Resource) error {
	switch act {
	case ActInternalIssuance:
		if !p.System() {
			return forbidden(p, "issue for mica itself", "only mica does")
		}
		return nil
	case ActEnroll:
		// The token is the authorization: an admin allowed to make it made it
		// for exactly this identity and profile, and it works once.
		if p.Token != "" {
			return nil
		}
		return forbidden(p, "enroll", "enroll with a token from `mica token create`")
	case ActACMEIssue:
		// The door verified the account's signature and the order's
		// challenges; which profile ACME issues under is the config's.
		if strings.HasPrefix(p.Name, ACMEPrincipalPrefix) && p.Certificate == nil {
			return nil
		}
		return forbidden(p, "order certificates over ACME", "use an ACME account")
	case ActACMERevoke:
		// The door verified the request's signature by the certificate's
		// own key (CertKey) or by an account; an account may revoke only
		// what it ordered.
		if p.CertKey == res.Serial && res.Serial != "" {
			return nil
		}
		if strings.HasPrefix(p.Name, ACMEPrincipalPrefix) && p.Name == res.Requester {
			return nil
		}
		return forbidden(p, "revoke certificate "+res.Serial, "revoke it with the account that ordered it, or sign with the certificate's key")
	}
	r, ok := table[act]
	if !ok {
		return newError(KindInternal, nil, "no authorization rule for %q", act)
	}
	if p.System() {
		// mica itself, in process (its own certificates, carrying out an
		// approved request, benchmarks): no request authenticates as it.
		return nil
	}
	if p.configFile {
		if act == ActPolicyPropose || act == ActPolicyChange {
			return nil
		}
		return forbidden(p, r.what, "a config file only proposes its policy")
	}
	if !p.authenticated() {
		return newError(KindUnauthenticated, nil, "%s needs a client certificate issued by this server: pass --cert and --key", r.what)
	}
	if r.anyPeer || r.self || r.anyRole && len(p.Roles) > 0 || r.ownCert && res.Serial != "" && p.Record.Serial == res.Serial ||
		r.ownReq && res.Requester != "" && res.Requester == p.Name {
		return nil
	}
	perm, what := r.perm, r.what
	if r.reserved != "" && IsReservedProfile(res.Profile) {
		perm, what = r.reserved, what+" for the reserved profile "+res.Profile
	} else if act == ActTokenCreate {
		what += " for profile " + res.Profile
	}
	if act == ActApprovalDecide && res.Role != "" && !slices.Contains(p.Roles, res.Role) {
		return forbidden(p, what, fmt.Sprintf("this request is decided by holders of the %s role", res.Role))
	}
	if perm != "" && m.allows(p.Roles, perm, r.scoped, res) {
		return nil
	}
	if r.anyRole {
		return forbidden(p, what, fmt.Sprintf("it needs an administrator's credential (a certificate under the %s profile) holding a role from the policy's admins section or `mica role grant`", ProfileAdmin))
	}
	return forbidden(p, what, m.hint(perm))
}

// allows reports whether one of roles grants perm (within the grant's
// scope when scoped).
func (m *AccessModel) allows(roles []Role, perm Permission, scoped bool, res Resource) bool {
	for _, r := range roles {
		for _, g := range m.roles[r] {
			if g.Perm != perm {
				continue
			}
			if !scoped || g.covers(res) {
				return true
			}
		}
	}
	return false
}

// covers reports whether the grant's scope takes in res: its profile (when
// the grant names profiles) and its identity (when the grant names
// identities: a SPIFFE ID prefix ending in "/" or an exact name).
func (g Grant) covers(res Resource) bool {
	if len(g.Profiles) > 0 && !slices.Contains(g.Profiles, res.Profile) {
		return false
	}
	if len(g.Identities) == 0 {
		return true
	}
	for _, id := range g.Identities {
		if res.Identity == id || strings.HasSuffix(id, "/") && strings.HasPrefix(res.Identity, id) {
			return true
		}
	}
	return false
}

// hint names the least built-in role that has perm, for the refusal.
func (m *AccessModel) hint(perm Permission) string {
	for _, r := range []Role{RoleAuditor, RoleOperator, RoleAdmin} {
		for _, g := range builtinRoles[r] {
			if g.Perm == perm {
				return fmt.Sprintf("it needs %s (the %s role has it): a certificate under the %s profile and a role from the policy's admins section or `mica role grant`", perm, r, ProfileAdmin)
			}
		}
	}
	return "no role allows it"
}

func forbidden(p Principal, what, hint string) *Error {
	who := p.Name
	if who == "" {
		who = "an unauthenticated caller"
	}
	return newError(KindForbidden, nil, "%s may not %s: %s", who, what, hint)
}
