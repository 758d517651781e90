package authority

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.yaml.in/yaml/v3"

	"github.com/mica-pki/mica/internal/duration"
)

// The governance part of the policy: who holds which roles, what each role
// allows, which actions need approvals by others, and the separation of
// duties. It is compiled into an AccessModel, which the authority swaps as
// a whole when the policy changes.

// RoleList is one role or several, as the admins section writes them
// ("admin" or "[operator, security]").
type RoleList []string

// UnmarshalYAML reads a scalar or a sequence.
func (l *RoleList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*l = RoleList{n.Value}
		return nil
	case yaml.SequenceNode:
		var s []string
		if err := n.Decode(&s); err != nil {
			return err
		}
		*l = s
		return nil
	}
	return fmt.Errorf("line %d: a role is a name or a list of names, like admin or [operator, security]", n.Line)
}

// RoleConfig defines a role: its permissions and, optionally, the profiles
// and identities they are narrowed to.
type RoleConfig struct {
	Permissions []Permission `yaml:"permissions"`
	// Profiles narrows token:create and cert:revoke to these profiles.
	Profiles []string `yaml:"profiles,omitempty"`
	// Identities narrows them to these identities: SPIFFE ID prefixes
	// ending in "/" or exact names.
	Identities []string `yaml:"identities,omitempty"`
}

// ApprovalRule says an action needs Required distinct approvers holding the
// Approvers role before it runs.
type ApprovalRule struct {
	Action Action `yaml:"action"`
	// Profiles limits the rule to requests about these profiles (tokens,
	// revocations); empty: every request of the action.
	Profiles  []string `yaml:"profiles,omitempty"`
	Required  int      `yaml:"required"`
	Approvers Role     `yaml:"approvers"`
	// Expires is how long a request waits for its approvers; 24h default.
	Expires duration.Duration `yaml:"expires,omitempty"`
}

// Governance is the governance part of the policy document.
type Governance struct {
	Admins    map[string]RoleList   `yaml:"admins"`
	Roles     map[string]RoleConfig `yaml:"roles,omitempty"`
	Approvals []ApprovalRule        `yaml:"approvals,omitempty"`
	// PrivilegedProfiles are profiles whose certificates an administrator
	// who answers for them (their owner) may not revoke alone: a second
	// administrator must approve (separation of duties). The reserved
	// profiles are always privileged.
	PrivilegedProfiles []string `yaml:"privileged_profiles,omitempty"`
	// BreakGlassMax caps an emergency grant made without approvals (with a
	// mandatory reason and an alert); 1h when unset.
	BreakGlassMax duration.Duration `yaml:"break_glass_max,omitempty"`
}

// approvableActions are the actions an approval rule may name.
var approvableActions = []Action{ActTokenCreate, ActCertRevoke, ActIdentityRevoke, ActIdentityDeny,
	ActRoleGrant, ActPolicyChange, ActCARotate}

// Defaults of the governance part.
const (
	DefaultApprovalExpiry = 24 * time.Hour
	DefaultBreakGlassMax  = time.Hour
	MaxGrant              = 30 * 24 * time.Hour
)

// AccessModel is the compiled governance part: immutable, swapped whole.
type AccessModel struct {
	roles      map[Role][]Grant
	admins     map[string][]Role // SPIFFE ID → roles from the policy
	rules      []ApprovalRule
	privileged map[string]bool
	breakGlass time.Duration
}

// CompileAccess checks the governance part against the trust domain and
// the profiles the policy defines, and compiles it. Every problem is
// reported, each naming where it is and how to fix it.
func CompileAccess(g Governance, trustDomain string, profiles []string) (*AccessModel, error) {
	var errs []string
	fail := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	m := &AccessModel{roles: map[Role][]Grant{}, admins: map[string][]Role{}, privileged: map[string]bool{},
		breakGlass: g.BreakGlassMax.D()}
	if m.breakGlass == 0 {
		m.breakGlass = DefaultBreakGlassMax
	}
	for r, gs := range builtinRoles {
		m.roles[r] = gs
	}
	knownProfile := func(p string) bool { return slices.Contains(profiles, p) }
	for _, name := range sortedKeys(g.Roles) {
		rc := g.Roles[name]
		if _, builtin := builtinRoles[Role(name)]; builtin {
			fail("roles: %s is a built-in role: give yours another name", name)
			continue
		}
		if len(rc.Permissions) == 0 {
			fail("roles: %s has no permissions: list some, like permissions: [approval:decide]", name)
		}
		for _, p := range rc.Permissions {
			if !slices.Contains(Permissions, p) {
				fail("roles: %s: %q is not a permission (permissions: %s)", name, p, permissionList())
			}
		}
		for _, p := range rc.Profiles {
			if !knownProfile(p) {
				fail("roles: %s: profile %q is not defined", name, p)
			}
		}
		for _, id := range rc.Identities {
			if !strings.HasPrefix(id, "spiffe://") && strings.ContainsAny(id, "/:") {
				fail("roles: %s: identity %q is neither a SPIFFE ID prefix nor a name", name, id)
			}
		}
		var gs []Grant
		for _, p := range rc.Permissions {
			gs = append(gs, Grant{Perm: p, Profiles: rc.Profiles, Identities: rc.Identities})
		}
		m.roles[Role(name)] = gs
	}
	for _, s := range sortedKeys(g.Admins) {
		id, err := spiffeid.FromString(s)
		if err != nil || id.TrustDomain().Name() != trustDomain || !strings.HasPrefix(id.Path(), AdminPathPrefix) ||
			strings.Contains(strings.TrimPrefix(id.Path(), AdminPathPrefix), "/") {
			fail("admins: %q is not an administrator's SPIFFE ID: write it like spiffe://%s%salice", s, trustDomain, AdminPathPrefix)
			continue
		}
		for _, r := range g.Admins[s] {
			if _, ok := m.roles[Role(r)]; !ok {
				fail("admins: %s: role %q is neither built in (admin, operator, auditor) nor defined under roles", s, r)
				continue
			}
			m.admins[id.String()] = append(m.admins[id.String()], Role(r))
		}
	}
	for i, r := range g.Approvals {
		where := fmt.Sprintf("approvals[%d] (%s)", i, r.Action)
		switch {
		case !slices.Contains(approvableActions, r.Action):
			fail("%s: the action is not approvable: use one of %s", where, actionList(approvableActions))
		case r.Required < 1 || r.Required > 10:
			fail("%s: required must be 1 to 10 approvers", where)
		}
		def, ok := m.roles[r.Approvers]
		switch {
		case !ok:
			fail("%s: approvers role %q is not defined", where, r.Approvers)
		case !slices.ContainsFunc(def, func(g Grant) bool { return g.Perm == PermApprovalDecide }):
			fail("%s: approvers role %q lacks the approval:decide permission", where, r.Approvers)
		default:
			holders := 0
			for _, roles := range m.admins {
				if slices.Contains(roles, r.Approvers) {
					holders++
				}
			}
			if holders < r.Required {
				// With fewer holders than approvals needed, a request
				// could never pass (the requester never counts): say so
				// now, not when someone is waiting.
				fail("%s: %d approvers needed but only %d administrators hold the %s role", where, r.Required, holders, r.Approvers)
			}
		}
		for _, p := range r.Profiles {
			if !knownProfile(p) {
				fail("%s: profile %q is not defined", where, p)
			}
		}
		if r.Expires.D() == 0 {
			r.Expires = duration.Duration(DefaultApprovalExpiry)
		}
		m.rules = append(m.rules, r)
	}
	for _, p := range g.PrivilegedProfiles {
		if !knownProfile(p) {
			fail("privileged_profiles: profile %q is not defined", p)
		}
		m.privileged[p] = true
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("authority: the policy's governance part has problems:\n  %s", strings.Join(errs, "\n  "))
	}
	return m, nil
}

// DefaultAccess is the access model of a policy with no governance part
// but admins: the built-in roles, no approvals.
func DefaultAccess(admins map[string]Role) *AccessModel {
	m := &AccessModel{roles: map[Role][]Grant{}, admins: map[string][]Role{}, privileged: map[string]bool{},
		breakGlass: DefaultBreakGlassMax}
	for r, gs := range builtinRoles {
		m.roles[r] = gs
	}
	for id, r := range admins {
		m.admins[id] = []Role{r}
	}
	return m
}

// rules returns the approval rules that apply to act on res.
func (m *AccessModel) rulesFor(act Action, res Resource) []ApprovalRule {
	var out []ApprovalRule
	for _, r := range m.rules {
		if r.Action == act && (len(r.Profiles) == 0 || slices.Contains(r.Profiles, res.Profile)) {
			out = append(out, r)
		}
	}
	return out
}

// HasRole reports whether a role name is defined.
func (m *AccessModel) HasRole(r Role) bool { _, ok := m.roles[r]; return ok }

func permissionList() string {
	s := make([]string, len(Permissions))
	for i, p := range Permissions {
		s[i] = string(p)
	}
	return strings.Join(s, ", ")
}

func actionList(as []Action) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = string(a)
	}
	return strings.Join(s, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
