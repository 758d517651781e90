package authority

import (
	"fmt"
	"slices"
	"strings"
)

// This file is the whole access model: every "who may" of every door is
// answered by Authorize, from the table below. A door never decides; it
// asks (through the Authority's methods, which call Authorize first).
//
// Who holds which credential:
//   - a workload holds a certificate under an ordinary profile: it may act
//     on its own certificate only (renew, read, revoke, prove) and mint
//     JWT-SVIDs for its own SPIFFE ID;
//   - an administrator holds a certificate issued under the reserved
//     profile mica-admin (recorded in the inventory) AND is listed in the
//     config's admins section with a role; the role comes from the
//     credential, never from a name alone (see roleOf);
//   - a token holder may enroll exactly the identity and profile the token
//     is bound to, once (see Enroll: the token is the authorization).

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
)

// Role is a named set of permissions. The built-in roles are ranked
// (auditor ⊂ operator ⊂ admin).
type Role string

const (
	RoleNone     Role = ""         // a workload: its own certificate only
	RoleAuditor  Role = "auditor"  // reads: inventory, deny list, audit log, reports
	RoleOperator Role = "operator" // auditor + tokens for ordinary profiles
	RoleAdmin    Role = "admin"    // everything
)

// rolePermissions is the table of the built-in roles.
var rolePermissions = map[Role][]Permission{
	RoleAuditor:  {PermInventoryRead, PermAuditRead, PermReportRead},
	RoleOperator: {PermInventoryRead, PermAuditRead, PermReportRead, PermTokenCreate},
	RoleAdmin: {PermInventoryRead, PermAuditRead, PermReportRead, PermTokenCreate,
		PermTokenCreateReserved, PermCertRevoke, PermIdentityDeny, PermServerStats},
}

// ParseRole reads a role name from the config file.
func ParseRole(s string) (Role, error) {
	if _, ok := rolePermissions[Role(s)]; ok {
		return Role(s), nil
	}
	return RoleNone, fmt.Errorf("authority: unknown role %q: use admin, operator or auditor", s)
}

// Has reports whether the role includes permission p.
func (r Role) Has(p Permission) bool { return slices.Contains(rolePermissions[r], p) }

// Action is a request a principal makes of the authority.
type Action string

const (
	ActTokenCreate      Action = "token.create"      // Resource.Profile
	ActRenew            Action = "cert.renew"        // the presented certificate
	ActCertRead         Action = "cert.read"         // Resource.Serial
	ActCertList         Action = "cert.list"         // the inventory
	ActCertRevoke       Action = "cert.revoke"       // Resource.Serial
	ActIdentityRevoke   Action = "identity.revoke"   // every certificate of an identity
	ActIdentityDeny     Action = "identity.deny"     // deny and allow
	ActDenyListRead     Action = "identity.list"     // the deny list
	ActAuditRead        Action = "audit.read"        // checkpoints, leaves, events, consistency
	ActAuditProof       Action = "audit.proof"       // Resource.Serial
	ActReportRead       Action = "report.read"       // the expiry report
	ActServerStats      Action = "server.stats"      // the server's figures
	ActJWTSVID          Action = "jwt-svid.mint"     // for the caller's own SPIFFE ID
	ActFeedSubscribe    Action = "feed.subscribe"    // the revocation push feed
	ActACMERevoke       Action = "acme.revoke"       // Resource.Serial, by the ordering account or the certificate's key
	ActInternalIssuance Action = "internal.issuance" // mica issuing for itself
)

// Resource is what an action is about; only the fields the action names
// are read.
type Resource struct {
	Serial  string // canonical (see ParseSerial)
	Profile string
	// Requester is who the certificate named by Serial was issued to
	// (store.Certificate.Requester), for ACME revocation by account.
	Requester string
}

// rule is one row of the table: the permission that allows the action for
// anybody's resource, and whether a holder may do it to its own.
type rule struct {
	perm    Permission // "" when no role allows it for others
	ownCert bool       // the caller's own certificate (Resource.Serial) needs no permission
	self    bool       // the action is on the presented certificate itself: every holder may
	anyPeer bool       // every authenticated caller may
	what    string     // for refusals: "read the inventory"
}

// table answers "who may" for every action. Read it as: the action is
// allowed when the caller's role has perm, or ownCert and the resource is
// the caller's own certificate, or self (the action is on the presented
// certificate itself), or anyPeer.
var table = map[Action]rule{
	ActTokenCreate:    {perm: PermTokenCreate, what: "create tokens"}, // reserved profiles: PermTokenCreateReserved (below)
	ActRenew:          {self: true, what: "renew"},
	ActCertRead:       {perm: PermInventoryRead, ownCert: true, what: "read the inventory"},
	ActCertList:       {perm: PermInventoryRead, what: "read the inventory"},
	ActCertRevoke:     {perm: PermCertRevoke, ownCert: true, what: "revoke other certificates"},
	ActIdentityRevoke: {perm: PermCertRevoke, what: "revoke certificates by identity"},
	ActIdentityDeny:   {perm: PermIdentityDeny, what: "change the deny list"},
	ActDenyListRead:   {perm: PermInventoryRead, what: "read the deny list"},
	ActAuditRead:      {perm: PermAuditRead, what: "read the audit log"},
	ActAuditProof:     {perm: PermAuditRead, ownCert: true, what: "read the audit log"},
	ActReportRead:     {perm: PermReportRead, what: "read the expiry report"},
	ActServerStats:    {perm: PermServerStats, what: "read the server's stats"},
	ActJWTSVID:        {self: true, what: "mint JWT-SVIDs"},
	ActFeedSubscribe:  {anyPeer: true, what: "follow the revocation feed"},
}

// Authorize says whether p may do act on res: nil, or a KindForbidden
// error that names what is missing. It is the only place that compares a
// principal with a permission.
func Authorize(p Principal, act Action, res Resource) error {
	switch act {
	case ActInternalIssuance:
		if p.Name != SystemPrincipal {
			return forbidden(p, "issue for mica itself", "only mica does")
		}
		return nil
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
	if p.Record.Serial == "" && !p.System() {
		return newError(KindUnauthenticated, nil, "%s needs a client certificate issued by this server: pass --cert and --key", r.what)
	}
	if r.anyPeer || r.self || r.ownCert && res.Serial != "" && p.Record.Serial == res.Serial {
		return nil
	}
	perm := r.perm
	if act == ActTokenCreate && IsReservedProfile(res.Profile) {
		perm, r.what = PermTokenCreateReserved, "create tokens for the reserved profile "+res.Profile
	} else if act == ActTokenCreate {
		r.what = "create tokens for profile " + res.Profile
	}
	if perm != "" && p.Role.Has(perm) {
		return nil
	}
	return forbidden(p, r.what, neededRole(perm))
}

// neededRole names the least built-in role that has perm, for the hint.
func neededRole(perm Permission) string {
	for _, r := range []Role{RoleAuditor, RoleOperator, RoleAdmin} {
		if r.Has(perm) {
			return fmt.Sprintf("it needs the %s role: a certificate under the %s profile and an entry in the config's admins section", r, ProfileAdmin)
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
